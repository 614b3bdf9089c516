// The scdrugmap page: upload cells, pick a predictor, watch the job, show its calls.
// Plain browser JavaScript with no build step; it only talks to this server's /api.
"use strict";

const SHOWN_CELLS = 200;
const POLL_MS = 400;

const $ = (id) => document.getElementById(id);

function detailOf(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail) return JSON.stringify(body.detail);
  return `${response.status} ${response.statusText}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: keep the text */ }
  if (!response.ok) throw new Error(detailOf(body, response));
  return body;
}

function formatted(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A table built from text nodes only, so nothing from the store is ever parsed as HTML.
function table(rows, columns) {
  const element = document.createElement("table");
  const head = element.createTHead().insertRow();
  for (const column of columns) {
    const th = document.createElement("th");
    th.textContent = column;
    head.appendChild(th);
  }
  const body = element.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    if (row.call) tr.className = row.call;
    for (const column of columns) {
      const td = tr.insertCell();
      td.textContent = formatted(row[column]);
      if (typeof row[column] === "number") td.classList.add("num");
      if (column === "call") td.classList.add("call");
    }
  }
  return element;
}

function show(containerId, rows, columns, empty) {
  const container = $(containerId);
  container.replaceChildren();
  if (!rows.length) {
    const p = document.createElement("p");
    p.textContent = empty;
    container.appendChild(p);
    return;
  }
  container.appendChild(table(rows, columns || Object.keys(rows[0])));
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = false;
}

function figureElement(src, svg, caption) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = `${caption}. `;
  const link = document.createElement("a");
  link.href = svg;
  link.textContent = "SVG";
  text.appendChild(link);
  figure.append(img, text);
  return figure;
}

async function showPredictor(name) {
  const about = $("predictor-about");
  const figures = $("predictor-figures");
  about.textContent = "";
  figures.replaceChildren();
  if (!name) return;
  const record = await api(`/api/predictors/${encodeURIComponent(name)}`);
  const checked = record.cross_validated;
  const metrics = checked
    ? `cross-validated (${checked.split} split): F1 of the sensitive class ` +
      `${formatted(checked.metrics.f1_sensitive)}, AUROC ${formatted(checked.metrics.auroc)}`
    : "never cross-validated";
  about.textContent =
    `${record.name}: ${record.classifier} on the ${record.embedding.key} embedding ` +
    `(${record.embedding.model}), fitted on ${record.n_cells} cells; ${metrics}.`;
  if (!record.figures.length) {
    const p = document.createElement("p");
    p.textContent = "No cross-validated run of this embedding and classifier: nothing to show.";
    figures.appendChild(p);
  }
  for (const figure of record.figures) {
    const base = `/api/predictors/${encodeURIComponent(name)}/figures/${figure.figure}`;
    figures.appendChild(figureElement(`${base}.png`, `${base}.svg`, figure.caption));
  }
}

async function loadPredictors() {
  const select = $("predictor");
  const predictors = await api("/api/predictors");
  select.replaceChildren();
  for (const p of predictors) {
    const option = document.createElement("option");
    option.value = p.name;
    option.textContent = `${p.name}: ${p.classifier} on ${p.embedding}`;
    select.appendChild(option);
  }
  if (!predictors.length) {
    showError($("error"), "This store holds no predictor yet: run `scdrugmap train` first.");
    $("job-section").hidden = false;
    $("run").disabled = true;
    return;
  }
  select.addEventListener("change", () => showPredictor(select.value).catch(reportError));
  await showPredictor(select.value);
}

// XMLHttpRequest rather than fetch: it reports how much of the upload has gone.
function upload(file, query) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/api/jobs?${query}`);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      $("progress").value = event.loaded / event.total;
      $("stage").textContent = `uploading ${file.name}: ${Math.round(100 * event.loaded / event.total)} %`;
    });
    request.addEventListener("load", () => {
      let body = request.responseText;
      try { body = JSON.parse(body); } catch (_) { /* keep the text */ }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new Error(detailOf(body, { status: request.status, statusText: request.statusText })));
    });
    request.addEventListener("error", () => reject(new Error("the upload was cut off")));
    request.send(file);
  });
}

function showProgress(job) {
  const bar = $("progress");
  if (job.fraction === null) bar.removeAttribute("value");
  else bar.value = job.fraction;
  const counts = job.total ? ` (${job.done} of ${job.total} cells)` : "";
  $("stage").textContent = `${job.state}: ${job.stage}${counts}`;
}

async function showResults(job) {
  const base = `/api/jobs/${job.id}`;
  const [samples, page] = await Promise.all([
    api(`${base}/samples.json`),
    api(`${base}/cells.json?limit=${SHOWN_CELLS}`),
  ]);
  $("results-summary").textContent =
    `${page.total} cells in ${samples.length} sample(s) of ${job.filename}, ` +
    `predictor ${job.predictor}, kept as data set ${job.dataset_id}.`;
  show("samples-table", samples, null, "no samples");
  show("cells-table", page.cells, ["barcode", "sample", "prob_sensitive", "call"], "no cells");
  if (page.total > page.cells.length) {
    const note = document.createElement("p");
    note.textContent = `The first ${page.cells.length} of ${page.total} cells; download all below.`;
    $("cells-table").prepend(note);
  }
  for (const figure of ["map", "histogram"]) {
    $(figure).src = `${base}/figures/${figure}.png`;
    $(`${figure}-svg`).href = `${base}/figures/${figure}.svg`;
  }
  $("cells-csv").href = `${base}/cells.csv`;
  $("cells-json").href = `${base}/cells.json`;
  $("samples-csv").href = `${base}/samples.csv`;
  $("results").hidden = false;
}

async function follow(jobId) {
  for (;;) {
    const job = await api(`/api/jobs/${jobId}`);
    showProgress(job);
    if (job.state === "done") return showResults(job);
    if (job.state === "failed") throw new Error(job.error);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function reportError(error) {
  $("job-section").hidden = false;
  showError($("error"), error.message);
}

async function predict(event) {
  event.preventDefault();
  const file = $("file").files[0];
  $("error").hidden = true;
  $("results").hidden = true;
  $("job-section").hidden = false;
  if (!file) return reportError(new Error("Choose a file of cells first."));
  const query = new URLSearchParams({ predictor: $("predictor").value, filename: file.name });
  if ($("sample").value.trim()) query.set("sample", $("sample").value.trim());
  if ($("sample-column").value.trim()) query.set("sample_column", $("sample-column").value.trim());
  $("run").disabled = true;
  try {
    const job = await upload(file, query.toString());
    await follow(job.id);
    await loadDatasets();
  } catch (error) {
    reportError(error);
  } finally {
    $("run").disabled = false;
  }
}

async function loadDatasets() {
  const rows = await api("/api/datasets");
  const columns = ["dataset_id", "n_cells", "n_samples", "n_sensitive", "n_resistant", "drug"];
  show("datasets-table", rows, columns, "No data sets yet.");
}

async function runSql(event) {
  event.preventDefault();
  $("sql-error").hidden = true;
  try {
    const result = await api("/api/sql", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: $("sql").value }),
    });
    show("sql-table", result.rows, result.columns, "No rows.");
    if (result.truncated) {
      const note = document.createElement("p");
      note.textContent = `The first ${result.limit} rows.`;
      $("sql-table").prepend(note);
    }
  } catch (error) {
    showError($("sql-error"), error.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", predict);
  $("sql-form").addEventListener("submit", runSql);
  loadPredictors().catch(reportError);
  loadDatasets().catch((error) => showError($("sql-error"), error.message));
});
