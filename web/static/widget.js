/* xmodal "find similar" widget: <xmodal-similar item="SKU-123"></xmodal-similar>.
 * Plain JS, no dependencies; docs/widget.md says how to embed, configure and theme it.
 * Metadata is untrusted text: it is only ever set with textContent, and URLs taken
 * from it are kept only when they are http(s). */
(() => {
  "use strict";
  const TAG = "xmodal-similar";
  if (!window.customElements || customElements.get(TAG)) return; // loaded twice: once is enough

  const script = document.currentScript;
  const scriptData = (script && script.dataset) || {};
  const TIMEOUT_MS = 8000;
  const MAX_RETRY_WAIT_S = 5;
  const TEXT = {
    heading: "Similar items",
    empty: "No similar items yet",
    error: "Similar items are unavailable right now",
  };

  const CSS = `
:host{all:initial;display:block}
:host([hidden]){display:none}
.root{all:initial;display:block;box-sizing:border-box;width:100%;
 font-family:var(--xmodal-font,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);
 font-size:var(--xmodal-font-size,14px);line-height:1.4;color:var(--xmodal-text,#1f2328);
 background:var(--xmodal-bg,transparent);text-align:start;
 --w:var(--xmodal-card-width,clamp(136px,42vw,176px));--r:var(--xmodal-radius,8px);--a:var(--xmodal-accent,#1f5fd1);
 --m:var(--xmodal-muted,#5b636e);--b:var(--xmodal-border,#dcdfe4);--g:var(--xmodal-gap,12px)}
:where(.root *){box-sizing:border-box;margin:0;padding:0;font:inherit;color:inherit;
 letter-spacing:normal;text-transform:none;text-decoration:none;visibility:inherit}
h2{display:block;font-size:1.15em;font-weight:600;margin:0 0 8px}
.list{display:flex;gap:var(--g);overflow-x:auto;overscroll-behavior-x:contain;
 scroll-snap-type:x proximity;scroll-padding:0 2px;list-style:none;padding:2px 2px 10px;outline:none;border-radius:var(--r)}
.list:focus-visible{box-shadow:0 0 0 2px var(--a)}
.card{display:block;flex:0 0 var(--w);width:var(--w);scroll-snap-align:start}
.box{display:flex;flex-direction:column;height:100%;background:var(--xmodal-card-bg,#fff);
 border:1px solid var(--b);border-radius:var(--r);overflow:hidden;outline:none}
a.box:hover{border-color:var(--a)}
a.box:focus-visible{box-shadow:0 0 0 3px var(--a);border-color:var(--a)}
.img{display:block;width:100%;aspect-ratio:var(--xmodal-image-ratio,1);background:var(--xmodal-placeholder,#eef0f3);
 overflow:hidden;position:relative}
.img img{display:block;position:absolute;inset:0;width:100%;height:100%;object-fit:var(--xmodal-image-fit,cover);border:0}
.img img:not([src]){visibility:hidden}
.text{display:block;padding:8px 10px 10px}
.title{display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:2;overflow:hidden;
 height:2.8em;overflow-wrap:anywhere}
a.box .title{color:var(--xmodal-link,inherit)}
a.box:hover .title{text-decoration:underline}
.price{display:block;height:1.4em;margin-top:4px;font-weight:600;color:var(--xmodal-price,inherit);
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.skeleton .img,.skeleton .title,.skeleton .price{background:var(--xmodal-placeholder,#eef0f3);
 border-radius:4px;animation:pulse 1.2s ease-in-out infinite alternate}
.skeleton .title{height:2.8em}.skeleton .price{width:40%}
@keyframes pulse{from{opacity:1}to{opacity:.45}}
@media (prefers-reduced-motion:reduce){.skeleton *{animation:none!important}}
.state{display:flex;align-items:center;justify-content:center;text-align:center;
 min-height:calc((var(--w) - 2px) / (var(--xmodal-image-ratio,1)) + 4.2em + 36px);padding:16px;border:1px dashed var(--b);
 border-radius:var(--r);color:var(--m)}
.rail{position:relative;display:block}
.step{position:absolute;top:calc(50% - 24px);width:36px;height:36px;border-radius:50%;border:1px solid var(--b);
 background:var(--xmodal-card-bg,#fff);color:var(--xmodal-text,#1f2328);font-size:20px;line-height:1;cursor:pointer;
 display:none;align-items:center;justify-content:center;box-shadow:0 1px 4px rgba(0,0,0,.18)}
.step:hover{border-color:var(--a);color:var(--a)}
.prev{left:-6px}.next{right:-6px}
@media (hover:hover){.step:not([hidden]){display:flex}}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
`;

  /* An http(s) URL from untrusted text, resolved against `base`; "" for anything else
   * (javascript:, data:, garbage). */
  const safeUrl = (value, base) => {
    if (typeof value !== "string" || !value.trim()) return "";
    try {
      const url = new URL(value, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : "";
    } catch (_) {
      return "";
    }
  };

  /* A metadata field by name; "a.b" reads nested objects. */
  const field = (metadata, name) => {
    if (!name || !metadata) return undefined;
    let value = metadata;
    for (const part of name.split(".")) {
      if (value === null || typeof value !== "object") return undefined;
      value = value[part];
    }
    return value;
  };

  const asText = (value) =>
    value === undefined || value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);

  const el = (name, className) => {
    const node = document.createElement(name);
    if (className) node.className = className;
    return node;
  };

  const sleep = (seconds, signal) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, seconds * 1000);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      });
    });

  class RequestFailed extends Error {}

  class XmodalSimilar extends HTMLElement {
    static get observedAttributes() {
      return ["item", "limit", "filter", "kinds", "key", "api", "title-field", "price-field", "link-field",
        "image-field", "currency", "locale", "heading", "empty-text", "error-text"];
    }

    constructor() {
      super();
      this._shadow = this.attachShadow({ mode: "open" });
      const style = el("style");
      style.textContent = CSS;
      this._root = el("div", "root");
      this._shadow.append(style, this._root);
      this._objectUrls = [];
      this._pending = false;
      this._controller = null;
      this._observer = this._resized = null;
    }

    connectedCallback() {
      this._schedule();
    }

    disconnectedCallback() {
      this._cancel();
    }

    attributeChangedCallback(_name, before, after) {
      if (before !== after && this.isConnected) this._schedule();
    }

    /* Several attributes set in a row (a single-page shop changing item and filter)
     * make one request. */
    _schedule() {
      if (this._pending) return;
      this._pending = true;
      queueMicrotask(() => {
        this._pending = false;
        if (this.isConnected) this._load().catch((error) => this._fail(String(error)));
      });
    }

    _cancel() {
      if (this._controller) this._controller.abort();
      this._controller = null;
      if (this._observer) this._observer.disconnect();
      if (this._resized) this._resized.disconnect();
      this._observer = this._resized = null;
      for (const url of this._objectUrls) URL.revokeObjectURL(url);
      this._objectUrls = [];
    }

    _config() {
      const attr = (name) => this.getAttribute(name);
      let apiBase = attr("api") || scriptData.api || (script && script.src ? new URL(".", script.src).href : location.href);
      apiBase = new URL(apiBase, location.href).href.replace(/\/?$/, "/"); // "https://x/api" means "https://x/api/"
      const limit = parseInt(attr("limit") || "", 10);
      let filter = null;
      const rawFilter = attr("filter");
      if (rawFilter && rawFilter.trim()) {
        try {
          filter = JSON.parse(rawFilter);
        } catch (error) {
          throw new RequestFailed(`the filter attribute is not valid JSON: ${error.message}`);
        }
        if (filter === null || typeof filter !== "object" || Array.isArray(filter)) {
          throw new RequestFailed("the filter attribute must be a JSON object");
        }
      }
      const item = (attr("item") || "").trim();
      if (!item) throw new RequestFailed("the item attribute is missing");
      return {
        apiBase,
        key: attr("key") || scriptData.key || "",
        item,
        limit: Number.isFinite(limit) ? Math.min(50, Math.max(1, limit)) : 8,
        filter,
        kinds: (attr("kinds") || "").split(/[\s,]+/).filter(Boolean),
        titleField: attr("title-field") || "title",
        priceField: attr("price-field") || "price",
        linkField: attr("link-field") || "",
        imageField: attr("image-field") || "",
        currency: attr("currency") || "",
        locale: attr("locale") || undefined,
      };
    }

    _setState(state, detail) {
      this.setAttribute("data-state", state);
      if (detail) this.setAttribute("data-error", detail);
      else this.removeAttribute("data-error");
      this.dispatchEvent(new CustomEvent("xmodal-state", { detail: { state, error: detail || null } }));
    }

    _heading() {
      const text = this.getAttribute("heading");
      const heading = el("h2");
      heading.textContent = text || TEXT.heading;
      if (text === "") heading.className = "sr"; // hidden, still naming the list for screen readers
      return heading;
    }

    _message(state, text, detail) {
      const box = el("div", "state");
      box.setAttribute("role", "status");
      box.textContent = text;
      this._root.replaceChildren(this._heading(), box);
      this._setState(state, detail);
    }

    _fail(detail) {
      this._cancel();
      // A shopper gets a short sentence; the reason is for the site's developers.
      console.debug(`${TAG}:`, detail);
      this._message("error", this.getAttribute("error-text") || TEXT.error, detail);
    }

    _list(cards, busy) {
      const heading = this._heading();
      heading.id = "h";
      const list = el("ul", "list");
      list.setAttribute("aria-labelledby", "h");
      list.tabIndex = 0; // scrollable with the keyboard even when the cards are not links
      if (busy) list.setAttribute("aria-busy", "true");
      list.append(...cards);
      list.addEventListener("keydown", (event) => this._arrowKeys(event, list));
      // Buttons for a mouse without a horizontal wheel; keyboards and touch scroll the list.
      const rail = el("div", "rail");
      const steps = [["prev", "\u2039", -1], ["next", "\u203a", 1]].map(([name, sign, way]) => {
        const step = el("button", `step ${name}`);
        step.type = "button";
        step.tabIndex = -1;
        step.setAttribute("aria-hidden", "true");
        step.textContent = sign;
        step.addEventListener("click", () => list.scrollBy({ left: way * list.clientWidth * 0.8, behavior: "smooth" }));
        return step;
      });
      const update = () => {
        steps[0].hidden = list.scrollLeft <= 3;
        steps[1].hidden = list.scrollLeft + list.clientWidth >= list.scrollWidth - 3;
      };
      list.addEventListener("scroll", update, { passive: true });
      rail.append(list, ...steps);
      this._root.replaceChildren(heading, rail);
      if (this._resized) this._resized.disconnect(); // the skeleton list's
      if (window.ResizeObserver) {
        this._resized = new ResizeObserver(update); // a narrower window may need them
        this._resized.observe(list);
      } else requestAnimationFrame(update);
      return list;
    }

    /* Left and right arrows move between the cards' links. */
    _arrowKeys(event, list) {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const links = [...list.querySelectorAll("a")];
      const at = links.indexOf(this._shadow.activeElement);
      if (at < 0) return;
      const next = links[at + (event.key === "ArrowRight" ? 1 : -1)];
      if (next) {
        event.preventDefault();
        next.focus();
        next.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    }

    async _load() {
      this._cancel();
      let config;
      try {
        config = this._config();
      } catch (error) {
        this._fail(error.message);
        return;
      }
      const controller = new AbortController();
      this._controller = controller;
      const skeletons = Array.from({ length: config.limit }, () => this._skeleton());
      this._list(skeletons, true);
      this._setState("loading");

      const url = new URL(`items/${encodeURIComponent(config.item)}/similar`, config.apiBase);
      url.searchParams.set("k", String(config.limit));
      if (config.filter) url.searchParams.set("filter", JSON.stringify(config.filter));
      for (const kind of config.kinds) url.searchParams.append("kinds", kind);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, TIMEOUT_MS);
      let response, answer;
      try {
        response = await this._fetch(url, config.key, controller.signal);
        answer = response.ok ? await response.json() : null;
      } catch (error) {
        if (controller !== this._controller) return; // replaced by a newer request
        this._fail(timedOut ? `no answer within ${TIMEOUT_MS / 1000} s` : `request failed: ${error}`);
        return;
      } finally {
        clearTimeout(timer);
      }
      if (controller !== this._controller) return;
      if (response.status === 404) {
        // Not indexed (yet): a product added to the shop minutes ago, say. The shopper
        // is told there is nothing to show, not that something broke.
        this._cancel();
        this._message("empty", this.getAttribute("empty-text") || TEXT.empty, await this._reason(response));
        return;
      }
      if (!response.ok) {
        this._fail(await this._reason(response));
        return;
      }
      const hits = answer && answer.hits;
      if (!Array.isArray(hits)) {
        this._fail("no hits in the answer");
        return;
      }
      if (!hits.length) {
        this._cancel();
        this._message("empty", this.getAttribute("empty-text") || TEXT.empty);
        return;
      }
      const cards = hits.slice(0, config.limit).map((hit) => this._card(hit, config));
      const list = this._list(cards.map((card) => card.node), false);
      this._loadImages(cards, list, config, controller.signal);
      this._setState("ready");
    }

    async _reason(response) {
      let detail = "";
      try {
        detail = (await response.json()).detail;
      } catch (_) {
        /* not JSON: the status says enough */
      }
      return `HTTP ${response.status}${detail ? `: ${typeof detail === "string" ? detail : JSON.stringify(detail)}` : ""}`;
    }

    /* GET with the key, and one more try after a 429's Retry-After. */
    async _fetch(url, key, signal) {
      const headers = key ? { "X-API-Key": key } : {};
      for (let attempt = 0; ; attempt++) {
        const response = await fetch(url, { headers, signal, credentials: "omit" });
        const wait = Number(response.headers.get("Retry-After"));
        if (response.status !== 429 || attempt > 0 || !(wait <= MAX_RETRY_WAIT_S)) return response;
        await sleep(wait, signal);
      }
    }

    _skeleton() {
      const card = el("li", "card skeleton");
      card.setAttribute("aria-hidden", "true");
      const box = el("div", "box");
      const text = el("div", "text");
      text.append(el("span", "title"), el("span", "price"));
      box.append(el("div", "img"), text);
      card.append(box);
      return card;
    }

    _card(hit, config) {
      const metadata = hit.metadata && typeof hit.metadata === "object" ? hit.metadata : {};
      const title = asText(field(metadata, config.titleField)) || asText(hit.external_id) || "";
      const price = this._price(field(metadata, config.priceField), config);
      const link = safeUrl(field(metadata, config.linkField), location.href);
      const card = el("li", "card");
      card.setAttribute("data-id", asText(hit.external_id || hit.id));
      const template = this.querySelector("template");
      const img = template ? this._fromTemplate(card, template, metadata, title, price, link) : this._defaultCard(card, title, price, link);
      return { node: card, img, hit, metadata };
    }

    _defaultCard(card, title, price, link) {
      const box = el(link ? "a" : "div", "box");
      if (link) box.href = link;
      const media = el("div", "img");
      const img = el("img");
      img.alt = title;
      img.addEventListener("error", () => img.removeAttribute("src")); // no broken-image icon
      media.append(img);
      const text = el("div", "text");
      const titleNode = el("span", "title");
      titleNode.textContent = title;
      const priceNode = el("span", "price");
      priceNode.textContent = price;
      text.append(titleNode, priceNode);
      box.append(media, text);
      card.append(box);
      return img;
    }

    /* The site's own card: a <template> child whose [data-field] elements are filled
     * (textContent; an <img> gets the picture, an <a> the link). Its <style> elements
     * go into the shadow root once. */
    _fromTemplate(card, template, metadata, title, price, link) {
      if (!this._templateStyled) {
        this._templateStyled = true;
        for (const style of template.content.querySelectorAll("style")) this._shadow.append(style.cloneNode(true));
      }
      const content = template.content.cloneNode(true);
      for (const style of content.querySelectorAll("style")) style.remove();
      let img = null;
      for (const node of content.querySelectorAll("[data-field]")) {
        const name = node.getAttribute("data-field");
        if (node.tagName === "IMG") {
          if (name === "image" && !img) {
            img = node;
            node.alt = title;
          }
        } else if (node.tagName === "A") {
          if (name === "link" && link) node.href = link;
          else if (name === "link") node.removeAttribute("href");
          else node.textContent = asText(field(metadata, name));
        } else {
          node.textContent = name === "title" ? title : name === "price" ? price : asText(field(metadata, name));
        }
      }
      card.append(content);
      return img;
    }

    _price(value, config) {
      if (value === undefined || value === null || value === "") return "";
      const number = typeof value === "number" ? value : typeof value === "string" && value.trim() ? Number(value) : NaN;
      if (!Number.isFinite(number)) return asText(value);
      try {
        const options = config.currency ? { style: "currency", currency: config.currency } : {};
        return new Intl.NumberFormat(config.locale, options).format(number);
      } catch (_) {
        return asText(value); // an unknown currency code or locale: the figure as it is
      }
    }

    /* Pictures load as their cards scroll into view (a narrow screen shows two cards of
     * eight): fewer requests against the key's rate. */
    _loadImages(cards, list, config, signal) {
      const byNode = new Map(cards.filter((card) => card.img).map((card) => [card.node, card]));
      const load = (card) => {
        this._image(card, config, signal).catch((error) => {
          if (!signal.aborted) console.debug(`${TAG}: no picture for ${card.hit.id}: ${error}`);
        });
      };
      if (!("IntersectionObserver" in window)) {
        byNode.forEach(load);
        return;
      }
      this._observer = new IntersectionObserver(
        (entries, observer) => {
          for (const entry of entries) {
            if (!entry.isIntersecting) continue;
            observer.unobserve(entry.target);
            load(byNode.get(entry.target));
          }
        },
        { root: list, rootMargin: "0px 50% 0px 50%" },
      );
      for (const node of byNode.keys()) this._observer.observe(node);
    }

    async _image(card, config, signal) {
      const img = card.img;
      const own = safeUrl(field(card.metadata, config.imageField), location.href);
      if (own) {
        img.src = own;
        return;
      }
      if (card.hit.kind === "audio") return; // a sound has no picture: the placeholder stays
      const path = card.hit.thumbnail_url || `items/${encodeURIComponent(card.hit.id)}/thumbnail`;
      const url = new URL(path, config.apiBase);
      if (url.searchParams.has("sig")) {
        img.src = url.href; // signed by the server: an <img> needs no header
        return;
      }
      const response = await this._fetch(url, config.key, signal);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const blob = await response.blob();
      if (signal.aborted) return;
      const objectUrl = URL.createObjectURL(blob);
      this._objectUrls.push(objectUrl);
      img.src = objectUrl;
    }
  }

  customElements.define(TAG, XmodalSimilar);
})();
