// The search page: speaks to the xmodal API of its own origin over HTTP only.
// The address holds the query (q, kind, filter, page, like) so a search can be
// shared and the back button works; uploads (a dropped image or sound) are not kept.

const PAGE_SIZE = 24;
const KEY_STORAGE = "xmodal-api-key";
const $ = (id) => document.getElementById(id);

const ui = {
  form: $("search-form"), query: $("query"), file: $("file-input"),
  keyForm: $("key-form"), keyInput: $("key-input"), keyReason: $("key-reason"),
  rerankBox: $("rerank-box"), rerank: $("rerank"), rerankerName: $("reranker-name"),
  filters: $("filters"), facets: $("facet-list"), clearFilters: $("clear-filters"),
  status: $("status"), grid: $("grid"), queryView: $("query-view"),
  prev: $("prev"), next: $("next"), pageLabel: $("page-label"), overlay: $("drop-overlay"),
};

// What is searched now; `upload` (a File) is never put in the address.
let state = { text: "", kind: "", filter: {}, page: 0, like: "", rerank: false, upload: null };
let config = { reranker: null, maxExplain: 0, ready: false };
let searchNumber = 0; // answers of superseded searches are dropped

// -- the API -----------------------------------------------------------------------
class NeedsKey extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-API-Key", key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    throw new NeedsKey(await detailOf(response));
  }
  if (!response.ok) throw new Error(await detailOf(response));
  return response.json();
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status}`;
}

// -- the address -------------------------------------------------------------------
function stateFromAddress() {
  const params = new URLSearchParams(location.search);
  let filter = {};
  try { filter = JSON.parse(params.get("filter") || "{}") || {}; } catch (_) { filter = {}; }
  return {
    text: params.get("q") || "",
    kind: params.get("kind") || "",
    filter,
    page: Math.max(0, parseInt(params.get("page") || "0", 10) || 0),
    like: params.get("like") || "",
    rerank: params.get("rerank") === "1",
    upload: null,
  };
}

function addressOf(s) {
  const params = new URLSearchParams();
  if (s.text) params.set("q", s.text);
  if (s.like) params.set("like", s.like);
  if (s.kind) params.set("kind", s.kind);
  if (Object.keys(s.filter).length) params.set("filter", JSON.stringify(s.filter));
  if (s.page) params.set("page", String(s.page));
  if (s.rerank) params.set("rerank", "1");
  const query = params.toString();
  return query ? `?${query}` : location.pathname;
}

function go(changes, push = true) {
  state = { ...state, ...changes };
  if (push && !state.upload) history.pushState(null, "", addressOf(state));
  showState();
  runSearch();
}

window.addEventListener("popstate", () => {
  state = stateFromAddress();
  showState();
  runSearch();
});

function showState() {
  ui.query.value = state.text;
  for (const radio of document.querySelectorAll('input[name="kind"]')) {
    radio.checked = radio.value === state.kind;
  }
  ui.rerank.checked = state.rerank;
  showFilter();
}

// -- searching ---------------------------------------------------------------------
function request() {
  const kinds = state.kind ? [state.kind] : undefined;
  const filter = Object.keys(state.filter).length ? state.filter : undefined;
  const offset = state.page * PAGE_SIZE;
  if (state.upload) {
    const form = new FormData();
    form.append("file", state.upload);
    form.append("k", String(PAGE_SIZE));
    form.append("offset", String(offset));
    if (kinds) form.append("kinds", kinds[0]);
    if (filter) form.append("filter", JSON.stringify(filter));
    const path = state.upload.type.startsWith("audio/") ? "/search/audio" : "/search/image";
    return [path, { method: "POST", body: form }];
  }
  const body = { k: PAGE_SIZE, offset, kinds, filter };
  if (state.like) body.item_id = state.like;
  else body.text = state.text;
  if (state.text && state.rerank && config.reranker) {
    body.rerank = true;
    body.explain = Math.min(config.maxExplain, 3);
  }
  return ["/search", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }];
}

async function runSearch() {
  showQuery();
  const number = ++searchNumber;
  if (!state.text && !state.like && !state.upload) {
    ui.grid.replaceChildren();
    setStatus("Type a description and press Enter, or drop an image or a sound.");
    showPager(0);
    return;
  }
  ui.grid.setAttribute("aria-busy", "true");
  setStatus("Searching…");
  try {
    const [path, options] = request();
    const answer = await api(path, options);
    if (number !== searchNumber) return;
    showHits(answer);
  } catch (error) {
    if (number !== searchNumber) return;
    ui.grid.replaceChildren();
    showPager(0);
    if (error instanceof NeedsKey) askForKey(error.message);
    else setStatus(`Search failed: ${error.message}`, true);
  } finally {
    if (number === searchNumber) ui.grid.removeAttribute("aria-busy");
  }
}

function showHits(answer) {
  const hits = answer.hits;
  ui.grid.replaceChildren(...hits.map(card));
  const first = state.page * PAGE_SIZE + 1;
  if (!hits.length) {
    setStatus(state.page ? "No more results." : "No matches.");
  } else {
    let note = "";
    if (answer.rerank && !answer.rerank.applied) note = ` (not reranked: ${answer.rerank.reason})`;
    else if (answer.rerank) note = ` (reranked by ${answer.rerank.model})`;
    setStatus(`Results ${first}–${first + hits.length - 1} in ${Math.round(answer.took_ms)} ms${note}`);
  }
  showPager(hits.length);
  if (hits.length) {
    // The first card is painted at the next frame after it is in the page.
    requestAnimationFrame(() => setTimeout(() => {
      performance.mark("xmodal:first-result");
      if (performance.getEntriesByName("xmodal:query", "mark").length) {
        performance.measure("xmodal:enter-to-first-result", "xmodal:query", "xmodal:first-result");
        performance.clearMarks("xmodal:query");
      }
    }, 0));
  }
}

function showPager(count) {
  ui.prev.parentElement.hidden = !count && !state.page;
  ui.prev.disabled = state.page === 0;
  ui.next.disabled = count < PAGE_SIZE;
  ui.pageLabel.textContent = count || state.page ? `Page ${state.page + 1}` : "";
}

function setStatus(text, error = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", error);
}

function showQuery() {
  ui.queryView.replaceChildren();
  ui.queryView.hidden = !(state.upload || state.like);
  if (state.upload) {
    const label = document.createElement("span");
    label.textContent = `Searching by ${state.upload.type.startsWith("audio/") ? "sound" : "image"}: ${state.upload.name || "pasted file"}`;
    if (state.upload.type.startsWith("image/")) {
      const preview = document.createElement("img");
      preview.alt = "";
      preview.src = URL.createObjectURL(state.upload);
      preview.addEventListener("load", () => URL.revokeObjectURL(preview.src), { once: true });
      ui.queryView.append(preview);
    }
    ui.queryView.append(label);
  } else if (state.like) {
    const label = document.createElement("span");
    label.textContent = `More like item ${state.like}`;
    ui.queryView.append(label);
  }
}

// -- a result card -----------------------------------------------------------------
const KIND_NAMES = { image: "Image", video: "Video", audio: "Sound" };

function card(hit) {
  const item = document.createElement("li");
  item.className = "hit";
  item.dataset.id = hit.id;
  item.dataset.kind = hit.kind;
  const name = shownName(hit);
  const moment = hit.segments.find((s) => s.start !== null && s.start !== undefined);
  if (moment) item.dataset.start = String(moment.start);

  let media;
  if (hit.kind === "image") {
    media = document.createElement("a");
    media.href = hit.media_url;
    media.target = "_blank";
    media.rel = "noopener";
    media.setAttribute("aria-label", `Open ${name}`);
  } else {
    media = document.createElement("button");
    media.type = "button";
    const span = moment ? ` from ${seconds(moment.start)} to ${seconds(moment.end)}` : "";
    media.setAttribute("aria-label", `Play ${name}${span}`);
    media.addEventListener("click", () => play(item, hit, moment), { once: true });
  }
  media.className = "media";
  if (hit.thumbnail_url) {
    const img = document.createElement("img");
    img.src = hit.thumbnail_url;
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    media.append(img);
  } else {
    media.append(soundIcon());
  }
  const badge = document.createElement("span");
  badge.className = `badge ${hit.kind}`;
  badge.textContent = KIND_NAMES[hit.kind] || hit.kind;
  media.append(badge);
  if (moment) {
    const mark = document.createElement("span");
    mark.className = "play-mark";
    mark.textContent = `▶ ${seconds(moment.start)}–${seconds(moment.end)}`;
    media.append(mark);
  }

  const body = document.createElement("div");
  body.className = "hit-body";
  const title = document.createElement("h2");
  title.className = "hit-title";
  title.textContent = name;
  const meta = document.createElement("p");
  meta.className = "hit-meta";
  meta.textContent = scoreText(hit);
  body.append(title, meta);
  if (hit.explanation) body.append(explanation(hit, media));

  const actions = document.createElement("div");
  actions.className = "hit-actions";
  const like = document.createElement("button");
  like.type = "button";
  like.textContent = "More like this";
  like.setAttribute("aria-label", `More like ${name}`);
  like.addEventListener("click", () => go({ like: hit.id, text: "", upload: null, page: 0 }));
  actions.append(like);
  body.append(actions);

  item.append(media, body);
  return item;
}

function shownName(hit) {
  const parts = (hit.uri || hit.id).split(/[\\/]/);
  return parts[parts.length - 1] || hit.id;
}

function scoreText(hit) {
  const parts = [];
  if (hit.calibrated_score !== null && hit.calibrated_score !== undefined) {
    parts.push(`score ${hit.calibrated_score.toFixed(2)}`);
  } else {
    parts.push(`similarity ${hit.score.toFixed(3)}`);
  }
  if (hit.rerank_score !== null && hit.rerank_score !== undefined) {
    parts.push(`rerank ${hit.rerank_score.toFixed(2)}`);
  }
  if (hit.duration) parts.push(`${seconds(hit.duration)} long`);
  return parts.join(" · ");
}

function seconds(value) {
  return `${Number(value).toFixed(1)} s`;
}

function soundIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "sound-icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M3 9v6h4l5 5V4L7 9H3zm13.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 13.4v2.1a9 9 0 0 0 0-17.6z");
  svg.append(path);
  return svg;
}

// A video plays its moment; a sound its best window (from the window's start).
function play(item, hit, moment) {
  const media = item.querySelector(".media");
  const player = document.createElement(hit.kind === "video" ? "video" : "audio");
  player.controls = true;
  player.preload = "auto";
  const start = moment ? moment.start : 0;
  player.src = moment && hit.kind === "video"
    ? `${hit.media_url}#t=${start},${moment.end}` : hit.media_url;
  player.setAttribute("aria-label", `${shownName(hit)}${moment ? ` from ${seconds(start)}` : ""}`);
  player.addEventListener("loadedmetadata", () => {
    if (Math.abs(player.currentTime - start) > 0.05) player.currentTime = start;
  }, { once: true });
  if (hit.kind === "video") {
    media.replaceWith(wrapPlayer(player, media));
  } else {
    const box = wrapPlayer(player, media);
    box.classList.add("sound-player");
    media.replaceWith(box);
  }
  player.play().catch((error) => setStatus(`Could not play ${shownName(hit)}: ${error.message}`, true));
  player.focus();
}

function wrapPlayer(player, old) {
  const box = document.createElement("div");
  box.className = player.tagName === "VIDEO" ? "media" : "media sound";
  if (player.tagName === "VIDEO") {
    box.append(player);
  } else {
    box.append(soundIcon(), player);
    player.className = "sound-controls";
  }
  const badge = old.querySelector(".badge");
  if (badge) box.append(badge);
  return box;
}

function explanation(hit, media) {
  const box = document.createElement("p");
  box.className = "explanation";
  box.append(document.createTextNode(hit.explanation.summary + " "));
  for (const word of hit.explanation.words) {
    const span = document.createElement("span");
    span.className = word.support > 0 ? "yes" : word.support < 0 ? "no" : "";
    span.textContent = `${word.word} `;
    box.append(span);
  }
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "link-button";
  toggle.textContent = "Show heatmap";
  toggle.setAttribute("aria-pressed", "false");
  toggle.addEventListener("click", () => {
    let heatmap = media.querySelector(".heatmap");
    if (!heatmap) {
      heatmap = document.createElement("img");
      heatmap.className = "heatmap";
      heatmap.alt = `Where the picture shows the query`;
      heatmap.src = hit.explanation.heatmap_url;
      media.append(heatmap);
    } else {
      heatmap.hidden = !heatmap.hidden;
    }
    const shown = !heatmap.hidden;
    toggle.setAttribute("aria-pressed", String(shown));
    toggle.textContent = shown ? "Hide heatmap" : "Show heatmap";
  });
  box.append(toggle);
  return box;
}

// -- filters from GET /facets -------------------------------------------------------
let facets = [];

async function loadFacets() {
  try {
    const answer = await api("/facets");
    // Checkboxes where values repeat (not one caption per item); ranges for numbers.
    facets = answer.keys.filter((f) => f.type === "number"
      || (f.values && f.values.length > 1 && f.values.length < f.count));
    buildFacets();
  } catch (error) {
    if (error instanceof NeedsKey) throw error;
    ui.facets.textContent = `Filters unavailable: ${error.message}`;
  }
}

function buildFacets() {
  ui.facets.replaceChildren();
  if (!facets.length) {
    const none = document.createElement("p");
    none.className = "hint";
    none.textContent = "No metadata to filter on.";
    ui.facets.append(none);
  }
  facets.forEach((facet, number) => {
    const group = document.createElement("fieldset");
    group.className = "facet";
    group.dataset.key = facet.key;
    const legend = document.createElement("legend");
    legend.textContent = facet.key;
    group.append(legend);
    if (facet.type === "number" && facet.min !== null && facet.max !== null && facet.min < facet.max) {
      const range = document.createElement("div");
      range.className = "range";
      for (const [bound, word] of [["min", "From"], ["max", "To"]]) {
        const label = document.createElement("label");
        label.textContent = word;
        const input = document.createElement("input");
        input.type = "number";
        input.step = "any";
        input.name = `${facet.key}-${bound}`;
        input.dataset.bound = bound;
        input.placeholder = String(facet[bound]);
        input.id = `facet-${number}-${bound}`;
        input.addEventListener("change", filterChanged);
        label.append(input);
        range.append(label);
      }
      group.append(range);
    } else if (facet.values) {
      facet.values.forEach((entry, index) => {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.id = `facet-${number}-${index}`;
        box.dataset.value = JSON.stringify(entry.value);
        box.addEventListener("change", filterChanged);
        const text = document.createElement("span");
        text.textContent = String(entry.value);
        const count = document.createElement("span");
        count.className = "count";
        count.textContent = String(entry.count);
        label.append(box, text, count);
        group.append(label);
      });
    } else {
      return;
    }
    ui.facets.append(group);
  });
  showFilter();
}

function filterFromControls() {
  const filter = {};
  for (const group of ui.facets.querySelectorAll(".facet")) {
    const key = group.dataset.key;
    const checked = [...group.querySelectorAll("input[type=checkbox]:checked")]
      .map((box) => JSON.parse(box.dataset.value));
    if (checked.length) filter[key] = { $in: checked };
    const range = {};
    for (const input of group.querySelectorAll("input[type=number]")) {
      if (input.value !== "" && Number.isFinite(Number(input.value))) {
        range[input.dataset.bound === "min" ? "$gte" : "$lte"] = Number(input.value);
      }
    }
    if (Object.keys(range).length) filter[key] = range;
  }
  return filter;
}

function showFilter() {
  for (const group of ui.facets.querySelectorAll(".facet")) {
    const condition = state.filter[group.dataset.key] || {};
    const listed = (condition.$in || []).map((v) => JSON.stringify(v));
    for (const box of group.querySelectorAll("input[type=checkbox]")) {
      box.checked = listed.includes(box.dataset.value);
    }
    for (const input of group.querySelectorAll("input[type=number]")) {
      const value = condition[input.dataset.bound === "min" ? "$gte" : "$lte"];
      input.value = value === undefined ? "" : String(value);
    }
  }
}

function filterChanged() {
  go({ filter: filterFromControls(), page: 0 });
}

// -- the key form ------------------------------------------------------------------
function askForKey(reason) {
  ui.keyReason.textContent = reason && sessionStorage.getItem(KEY_STORAGE)
    ? `That key was refused: ${reason}` : "This server needs an API key.";
  ui.keyForm.hidden = false;
  ui.facets.textContent = "Filters appear once the server accepts a key.";
  showPager(0);
  setStatus("An API key is needed to search this server.");
  ui.keyInput.focus();
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, ui.keyInput.value.trim());
  ui.keyInput.value = "";
  ui.keyForm.hidden = true;
  start();
});

// -- controls ----------------------------------------------------------------------
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  performance.clearMarks("xmodal:query");
  performance.mark("xmodal:query");
  const text = ui.query.value.trim();
  go({ text, like: "", upload: null, page: 0 });
});

for (const radio of document.querySelectorAll('input[name="kind"]')) {
  radio.addEventListener("change", () => go({ kind: radio.value, page: 0 }));
}
ui.rerank.addEventListener("change", () => go({ rerank: ui.rerank.checked, page: 0 }));
ui.clearFilters.addEventListener("click", () => go({ filter: {}, page: 0 }));
ui.prev.addEventListener("click", () => { go({ page: Math.max(0, state.page - 1) }); ui.grid.focus(); });
ui.next.addEventListener("click", () => { go({ page: state.page + 1 }); });

function searchByFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/") && !file.type.startsWith("audio/")) {
    setStatus(`Drop an image or a sound (this is ${file.type || "an unknown type"}).`, true);
    return;
  }
  go({ upload: file, text: "", like: "", page: 0 }, false);
}

ui.file.addEventListener("change", () => { searchByFile(ui.file.files[0]); ui.file.value = ""; });

let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
  dragDepth += 1;
  ui.overlay.hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) ui.overlay.hidden = true;
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.overlay.hidden = true;
  searchByFile(event.dataTransfer && event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = event.clipboardData && event.clipboardData.files[0];
  if (file) {
    event.preventDefault();
    searchByFile(file);
  }
});

// -- start -------------------------------------------------------------------------
// On a phone the filters start folded, so that the results are on the first screen.
ui.filters.open = matchMedia("(min-width: 760px)").matches;

async function start() {
  state = { ...stateFromAddress(), upload: state.upload };
  showState();
  try {
    // /health answers everyone; without a key on a keyed server it says only "ok".
    const health = await api("/health");
    if (health.items === undefined) {
      askForKey(sessionStorage.getItem(KEY_STORAGE) ? "the server does not know it" : "");
      return;
    }
    config = { reranker: health.reranker || null, maxExplain: health.max_explain || 0, ready: true };
    ui.rerankBox.hidden = !config.reranker;
    ui.rerankerName.textContent = config.reranker ? `with ${config.reranker}` : "";
    await loadFacets();
  } catch (error) {
    if (error instanceof NeedsKey) {
      askForKey(error.message);
      return;
    }
    setStatus(`The server could not be reached: ${error.message}`, true);
    return;
  }
  runSearch();
}

start();
