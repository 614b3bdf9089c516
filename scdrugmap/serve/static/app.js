// The scdrugmap page: upload cells, pick a predictor, watch the job, show its calls,
// and reopen earlier jobs. Plain browser JavaScript with no build step; it only talks to
// this server's /api.
"use strict";

const SHOWN_CELLS = 200;
const POLL_MS = 400;

const $ = (id) => document.getElementById(id);

// The file picked, sent ahead of its job so its per-cell columns can be offered:
// { file, promise (of the upload's record), used (a job took it, or it failed) }.
let staged = null;
// The job the page shows; polls and answers about any other job leave the page alone.
let shownJob = null;

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

// The server writes UTC times without a zone; shown in the reader's own time.
function localTime(iso) {
  if (!iso) return "";
  const zoned = /(Z|[+-]\d\d:\d\d)$/.test(iso) ? iso : `${iso}Z`;
  return new Date(zoned).toLocaleString();
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

// How the predictor's probabilities are calibrated, from its record.
function describeCalibration(calibration) {
  if (!calibration || !calibration.method) {
    const why = calibration && calibration.note ? ` (${calibration.note})` : "";
    return `Probabilities not calibrated${why}.`;
  }
  const grouping = calibration.grouping ? `, held out by ${calibration.grouping}` : "";
  return `Probabilities calibrated by ${calibration.method} (chosen by ` +
    `${calibration.n_folds}-fold cross-validation on the training cells${grouping}): ` +
    `out-of-fold ECE ${formatted(calibration.ece_raw)} before, ` +
    `${formatted(calibration.ece_calibrated)} after; Brier ` +
    `${formatted(calibration.brier_raw)} before, ${formatted(calibration.brier_calibrated)} after.`;
}

// Per-sample rows with the share's 95 % interval as one column in place of its two ends.
function sampleRows(samples) {
  return samples.map((sample) => {
    const row = {};
    for (const [key, value] of Object.entries(sample)) {
      if (key === "fraction_high") continue;
      if (key === "fraction_low") {
        row["fraction 95 % interval"] = value === null || sample.fraction_high === null
          ? ""
          : `${formatted(value)}–${formatted(sample.fraction_high)}`;
      } else row[key] = value;
    }
    return row;
  });
}

// Samples whose cells lie mostly outside the predictor's applicability domain: their
// calls extrapolate, and the page says so above the table rather than in a column alone.
function showOutsideDomain(samples) {
  const warning = $("domain-warning");
  const outside = samples.filter((sample) => sample.domain_note);
  warning.hidden = !outside.length;
  warning.textContent = outside
    .map((sample) =>
      `Sample ${sample.sample}: ${sample.domain_note} (${Math.round(100 * sample.fraction_in_domain)} % ` +
      "of its called cells in it); its call extrapolates from cells unlike the training cells.")
    .join(" ");
}

async function showPredictor(name) {
  const about = $("predictor-about");
  const figures = $("predictor-figures");
  about.textContent = "";
  figures.replaceChildren();
  if (!name) return;
  const record = await api(`/api/predictors/${encodeURIComponent(name)}`);
  const checked = record.cross_validated;
  const grouping = !checked || !checked.grouping
    ? ""
    : checked.optimistic
      ? ", held out by cell: optimistic, cells of one sample on both sides"
      : `, held out by ${checked.grouping}`;
  const metrics = checked
    ? `cross-validated (${checked.split} split${grouping}): AUROC ` +
      `${formatted(checked.metrics.auroc)}, MCC ${formatted(checked.metrics.mcc)}, ` +
      `F1 of the sensitive class ${formatted(checked.metrics.f1_sensitive)} ` +
      `(${formatted(checked.metrics.f1_chance)} calling every cell sensitive)`
    : "never cross-validated";
  about.textContent =
    `${record.name}: ${record.classifier} on the ${record.embedding.key} embedding ` +
    `(${record.embedding.model}), fitted on ${record.n_cells} cells; ${metrics}. ` +
    describeCalibration(record.calibration);
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
function upload(file, report) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/api/uploads?${new URLSearchParams({ filename: file.name })}`);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      report(`uploading ${file.name}: ${Math.round(100 * event.loaded / event.total)} %`);
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

function uploadStatus(text) {
  $("upload-status").textContent = text;
}

function describeUpload(record) {
  const cells = record.n_cells === null ? "" : `${record.n_cells} cells; `;
  const columns = record.columns.length
    ? `per-cell columns: ${record.columns.join(", ")}`
    : "no per-cell columns, so all cells are one sample";
  return `${record.filename}: ${cells}${columns}.`;
}

function showSampleChoice() {
  $("sample-label").hidden = $("sample-column").value !== "";
}

// The file's columns as the choices of the sample column, a sample-like one chosen.
function offerColumns(record) {
  const select = $("sample-column");
  select.replaceChildren(select.options[0]);
  for (const column of record.columns) {
    const option = document.createElement("option");
    option.value = column;
    option.textContent = `by column ${column}`;
    select.appendChild(option);
  }
  select.value = record.suggested_sample_column || "";
  select.disabled = !record.columns.length;
  showSampleChoice();
}

function forgetStaged() {
  const previous = staged;
  staged = null;
  if (!previous || previous.used) return;
  // A server keeps unused uploads a while; say at once that this one is not wanted.
  previous.promise
    .then((record) => api(`/api/uploads/${record.upload_id}`, { method: "DELETE" }))
    .catch(() => { /* it failed or went already: nothing to delete */ });
}

function sendAhead(file) {
  staged = { file, used: false, promise: upload(file, uploadStatus) };
  return staged;
}

// A file was picked: upload it now and offer its per-cell columns.
async function stage() {
  forgetStaged();
  offerColumns({ columns: [], suggested_sample_column: null });
  uploadStatus("");
  const file = $("file").files[0];
  if (!file) return;
  const current = sendAhead(file);
  try {
    const record = await current.promise;
    if (staged !== current) return;
    offerColumns(record);
    uploadStatus(describeUpload(record));
  } catch (error) {
    current.used = true;
    if (staged === current) uploadStatus(`${file.name} cannot be used: ${error.message}`);
  }
}

// The picked file's upload for a job; the job takes it, so a second run uploads again.
async function uploadFor(file) {
  const current = staged && staged.file === file && !staged.used ? staged : sendAhead(file);
  try {
    const record = await current.promise;
    uploadStatus(describeUpload(record));
    return record;
  } finally {
    current.used = true;
  }
}

function showProgress(job) {
  const bar = $("progress");
  const running = job.state === "queued" || job.state === "running";
  bar.classList.toggle("failed", job.state === "failed");
  if (!running) bar.value = 1; // done, or stopped by a failure
  else if (job.fraction === null) bar.removeAttribute("value");
  else bar.value = job.fraction;
  // A percentage: a stage counts cells or bytes, and its unit is not reported.
  const share = job.fraction === null ? "" : ` (${Math.round(100 * job.fraction)} %)`;
  if (job.state === "failed") $("stage").textContent = `failed while ${job.stage}`;
  else if (job.state === "done") {
    $("stage").textContent = `done: ${job.n_cells} cells in ${job.n_samples} sample(s)`;
  } else $("stage").textContent = `${job.state}: ${job.stage}${share}`;
}

// An error outside any job (an upload refused, the server gone): the bar stops too.
function stopBar() {
  const bar = $("progress");
  bar.value = 1;
  bar.classList.add("failed");
}

function showFailure(job) {
  showError($("error"), job.error || "the job failed without a message; see the server log");
}

async function showResults(job) {
  const base = `/api/jobs/${job.id}`;
  const [samples, page] = await Promise.all([
    api(`${base}/samples.json`),
    api(`${base}/cells.json?limit=${SHOWN_CELLS}`),
  ]);
  if (shownJob !== job.id) return;
  $("results").dataset.job = job.id;
  $("results-summary").textContent =
    `${page.total} cells in ${samples.length} sample(s) of ${job.filename}, ` +
    `predictor ${job.predictor}, kept as data set ${job.dataset_id}.` +
    (job.gene_coverage == null
      ? ""
      : ` Gene coverage ${Math.round(job.gene_coverage * 100)}% (${job.coverage_basis}).`);
  show("samples-table", sampleRows(samples), null, "no samples");
  showOutsideDomain(samples);
  show(
    "cells-table",
    page.cells,
    ["barcode", "sample", "prob_sensitive", "prob_sensitive_raw", "call", "no_call_reason",
      "domain_score", "in_domain"],
    "no cells",
  );
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
  resetGenes();
  $("results").hidden = false;
}

const SHOWN_GENES = 15;
const GENE_COLUMNS = ["gene", "score", "logfoldchange", "pval_adj", "pct_resistant", "pct_sensitive"];

function resetGenes() {
  $("genes-result").hidden = true;
  $("genes-error").hidden = true;
  $("genes-status").textContent = "";
  $("rank-genes").disabled = false;
}

// Adjusted p-values are mostly far below 0.001: shown in powers of ten.
function geneRows(rows) {
  return rows.map((row) => ({ ...row, pval_adj: row.pval_adj.toExponential(2) }));
}

// Rank the shown job's genes between its resistant and sensitive calls (kept by the
// server after the first time), then show the top ones each way and the volcano plot.
async function rankGenes() {
  const jobId = shownJob;
  resetGenes();
  $("rank-genes").disabled = true;
  $("genes-status").textContent = "ranking genes…";
  try {
    const base = `/api/jobs/${jobId}`;
    const ranked = await api(`${base}/genes.json?top=${SHOWN_GENES}`);
    if (shownJob !== jobId) return;
    const sizes = ranked.group_sizes;
    $("genes-status").textContent =
      `${ranked.n_genes} genes ranked between ${sizes.resistant} cells called resistant and ` +
      `${sizes.sensitive} called sensitive (${ranked.n_no_call} with no call left out).`;
    for (const group of ["resistant", "sensitive"]) {
      show(`genes-${group}`, geneRows(ranked.top[group]), GENE_COLUMNS, "no genes");
    }
    $("volcano").src = `${base}/genes/volcano.png`;
    $("volcano-svg").href = `${base}/genes/volcano.svg`;
    $("genes-csv").href = `${base}/genes.csv`;
    $("genes-result").hidden = false;
  } catch (error) {
    if (shownJob !== jobId) return;
    $("genes-status").textContent = "";
    showError($("genes-error"), error.message);
  } finally {
    if (shownJob === jobId) $("rank-genes").disabled = false;
  }
}

// Poll a job until it is done (then show its calls) or failed (then its error).
async function follow(jobId) {
  for (;;) {
    const job = await api(`/api/jobs/${jobId}`);
    if (shownJob !== jobId) return;
    showProgress(job);
    if (job.state === "done") return showResults(job);
    if (job.state === "failed") return showFailure(job);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function reportError(error) {
  $("job-section").hidden = false;
  stopBar();
  showError($("error"), error.message);
}

// Show a job from the start: its progress, then its calls or its error.
function showJob(jobId) {
  shownJob = jobId;
  $("error").hidden = true;
  $("results").hidden = true;
  $("job-section").hidden = false;
  $("progress").classList.remove("failed");
  $("progress").removeAttribute("value");
  for (const row of document.querySelectorAll("#jobs-table tr[data-job]")) {
    row.classList.toggle("current", row.dataset.job === jobId);
  }
  return follow(jobId);
}

function jobQuery(record) {
  const query = new URLSearchParams({ predictor: $("predictor").value, upload: record.upload_id });
  const column = $("sample-column").value;
  if (column) query.set("sample_column", column);
  else if ($("sample").value.trim()) query.set("sample", $("sample").value.trim());
  return query;
}

async function predict(event) {
  event.preventDefault();
  const file = $("file").files[0];
  shownJob = null;
  $("error").hidden = true;
  $("results").hidden = true;
  $("job-section").hidden = false;
  $("progress").classList.remove("failed");
  if (!file) return reportError(new Error("Choose a file of cells first."));
  $("run").disabled = true;
  try {
    $("progress").removeAttribute("value");
    $("stage").textContent = `uploading ${file.name}`;
    const record = await uploadFor(file);
    const job = await api(`/api/jobs?${jobQuery(record)}`, { method: "POST" });
    loadJobs().catch(reportError);
    await showJob(job.id);
    await Promise.all([loadDatasets(), loadJobs()]);
  } catch (error) {
    reportError(error);
  } finally {
    $("run").disabled = false;
  }
}

function jobRow(body, job) {
  const row = body.insertRow();
  row.dataset.job = job.id;
  row.classList.add(`state-${job.state}`);
  row.classList.toggle("current", job.id === shownJob);
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.textContent = job.filename;
  open.addEventListener("click", () => showJob(job.id).catch(reportError));
  row.insertCell().appendChild(open);
  const cells = job.n_cells === undefined ? "" : String(job.n_cells);
  for (const text of [job.predictor, job.state, cells, localTime(job.created_at)]) {
    row.insertCell().textContent = text;
  }
  row.cells[3].classList.add("num");
}

async function loadJobs() {
  const jobs = await api("/api/jobs");
  const container = $("jobs-table");
  container.replaceChildren();
  if (!jobs.length) {
    const p = document.createElement("p");
    p.textContent = "No jobs yet.";
    container.appendChild(p);
    return;
  }
  const element = table([], ["file", "predictor", "state", "cells", "started"]);
  for (const job of jobs) jobRow(element.tBodies[0], job);
  container.appendChild(element);
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
  $("file").addEventListener("change", stage);
  $("sample-column").addEventListener("change", showSampleChoice);
  $("sql-form").addEventListener("submit", runSql);
  $("rank-genes").addEventListener("click", rankGenes);
  loadPredictors().catch(reportError);
  loadJobs().catch(reportError);
  loadDatasets().catch((error) => showError($("sql-error"), error.message));
});
