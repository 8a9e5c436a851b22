"use strict";
// The sweeps list and a sweep's page (GET /sweeps, /sweeps/<id>, /sweeps/<id>/trials?curves=true):
// a trial table sortable by any column, each trial's objective over steps overlaid (pruned trials
// faded), and a scatter of each parameter against the objective. Uses index.html's helpers.
let sweepView = null, sweepTimer = null;

async function loadSweeps() {
  const list = await api("/sweeps?limit=20");
  const html = list.items.map((s) => {
    const n = Object.values(s.trial_states).reduce((a, b) => a + b, 0);
    return `<tr class="sweep" data-id="${esc(s.id)}"><td>${esc(s.name || short(s.id))}<br><span class="muted">${esc(s.metric)} · ${esc(s.sampler)}</span></td>
      <td class="state ${esc(s.state)}">${esc(s.state)}</td><td>${n}/${s.trials}</td>
      <td>${s.best_value == null ? "" : fmtNum(s.best_value)}${s.promote ? ` <span class="muted">@${esc(s.promote)}</span>` : ""}</td></tr>`;
  }).join("");
  const body = $("sweeps");
  if (html && body.dataset.html !== html) {
    body.innerHTML = html; body.dataset.html = html;
    body.querySelectorAll("tr.sweep").forEach((tr) => { tr.onclick = () => selectSweep(tr.dataset.id); });
  }
}

function selectSweep(id) {
  clearTimeout(jobTimer); clearTimeout(sweepTimer);
  for (const u of Object.values(sagan.charts)) u.destroy();
  sagan.charts = {};
  view = null;
  sweepView = {id, sort: "objective", desc: null};
  history.replaceState(null, "", `#sweep=${id}`);
  $("detail").innerHTML = `<div id="sweep-head"><p class="muted">loading sweep ${esc(short(id))}...</p></div>
    <button id="sweep-cancel" hidden>Cancel the sweep</button>
    <h3>Trials</h3><table id="trials" class="trials"><thead></thead><tbody></tbody></table>
    <h3 id="curves-title">Objective over steps</h3><div id="sweep-curves" class="charts"></div>
    <h3>Each parameter against the objective</h3><div id="sweep-scatter" class="charts"></div>`;
  $("sweep-cancel").onclick = async () => { await api(`/sweeps/${id}/cancel`, {method: "POST"}); refreshSweep(); };
  refreshSweep();
}

async function refreshSweep() {
  if (!sweepView) return;
  const id = sweepView.id;
  try {
    const [sweep, trials] = await Promise.all([api(`/sweeps/${id}`), api(`/sweeps/${id}/trials?curves=true`)]);
    if (!sweepView || sweepView.id !== id) return;
    sweepView.sweep = sweep; sweepView.trials = trials;
    renderSweep();
    if (sweep.state === "running") sweepTimer = setTimeout(refreshSweep, POLL_ACTIVE_MS);
  } catch (err) { $("sweep-head").innerHTML = `<p class="error">${esc(err.message)}</p>`; }
}

function renderSweep() {
  const {sweep, trials} = sweepView;
  const states = Object.entries(sweep.trial_states).map(([s, n]) => `${n} ${s}`).join(", ") || "none yet";
  $("sweep-head").innerHTML = `<h2>sweep ${esc(sweep.name || sweep.id)} <span id="sweep-state" class="state ${esc(sweep.state)}">${esc(sweep.state)}</span></h2>
    <p class="muted">${esc(sweep.sampler)} · ${sweep.trials} trials, ${sweep.parallel} at once · ${esc(sweep.direction)} ${esc(sweep.metric)}
      ${sweep.spec.prune ? ` · successive halving every ${sweep.spec.prune.every} steps from ${sweep.spec.prune.min_steps}, 1/${sweep.spec.prune.reduction} go on` : ""}</p>
    <p id="sweep-best">trials: ${esc(states)}${sweep.best_trial != null ? ` · best: trial ${sweep.best_trial}, ${esc(sweep.metric)} ${fmtNum(sweep.best_value)}` : ""}
      ${sweep.promote ? ` · promoted to <code>@${esc(sweep.promote)}</code>` : ""}</p>
    ${sweep.note ? `<p class="warn">${esc(sweep.note)}</p>` : ""}${sweep.error ? `<p class="error">${esc(sweep.error)}</p>` : ""}`;
  $("sweep-cancel").hidden = sweep.state !== "running";
  renderTrials(trials, sweep);
  drawSweepCurves(trials);
  drawScatter(trials);
}

function renderTrials(trials, sweep) {
  const names = Object.keys(sweep.spec.space);
  const cols = ["number", "state", "step", "objective", ...names];
  const {sort} = sweepView;
  const better = sweep.direction === "maximize";
  const desc = sweepView.desc ?? (sort === "objective" ? better : false);
  const key = (t) => sort in t.params ? t.params[sort] : t[sort];
  const rows = [...trials.items].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x == null) return 1; if (y == null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
  });
  $("trials").querySelector("thead").innerHTML = `<tr>${cols.map((c) => `<th data-col="${esc(c)}" class="sortable">${esc(c === "objective" ? trials.metric : c)}${c === sort ? (desc ? " ▼" : " ▲") : ""}</th>`).join("")}</tr>`;
  $("trials").querySelectorAll("th").forEach((th) => {
    th.onclick = () => {
      const same = sweepView.sort === th.dataset.col;
      sweepView.desc = same ? !desc : null; sweepView.sort = th.dataset.col; renderTrials(trials, sweep);
    };
  });
  $("trials").querySelector("tbody").innerHTML = rows.map((t) => `<tr class="trial${t.number === sweep.best_trial ? " best" : ""}" data-job="${esc(t.job_id)}" title="${esc(t.reason || "")}">
      <td>${t.number}${t.number === sweep.best_trial ? " ★" : ""}</td><td class="state ${esc(t.state)}">${esc(t.state)}</td>
      <td>${t.step}/${t.total_steps}</td><td class="objective">${t.objective == null ? "" : fmtNum(t.objective)}</td>
      ${names.map((n) => `<td>${esc(typeof t.params[n] === "number" ? fmtNum(t.params[n]) : JSON.stringify(t.params[n]))}</td>`).join("")}</tr>`).join("");
  $("trials").querySelectorAll("tr.trial").forEach((tr) => { tr.onclick = () => { sweepView = null; clearTimeout(sweepTimer); selectJob(tr.dataset.job); }; });
}

function chartIn(box, key, opts, data) {
  sagan.charts[key]?.destroy();
  box.querySelector(`[data-chart="${key}"]`)?.remove();
  const div = document.createElement("div"); div.dataset.chart = key; box.append(div);
  sagan.charts[key] = new uPlot({width: 440, height: 220, ...opts}, data, div);
}

function drawSweepCurves(trials) {
  const withCurve = trials.items.filter((t) => t.curve && t.curve.length);
  if (!withCurve.length) return;
  const data = uPlot.join(withCurve.map((t) => [t.curve.map((p) => p[0]), t.curve.map((p) => p[1])]));
  const series = [{label: "step"}, ...withCurve.map((t, i) => ({
    label: `trial ${t.number}${t.state === "pruned" ? " (pruned)" : ""}`,
    stroke: COLORS[i % COLORS.length] + (t.state === "pruned" ? "55" : ""),  // pruned: faded
    width: t.state === "pruned" ? 1 : 2, spanGaps: true, points: {size: 4}, value: (u, v) => fmtNum(v),
  }))];
  chartIn($("sweep-curves"), "sweep-objective", {title: `${trials.metric} of each trial`, scales: {x: {time: false}}, series, axes: [{values: ticks}, {values: ticks}]}, data);
}

function drawScatter(trials) {
  const done = trials.items.filter((t) => t.objective != null);
  const names = Object.keys(sweepView.sweep.spec.space);
  for (const n of names) {
    const pts = done.filter((t) => typeof t.params[n] === "number" || typeof t.params[n] === "boolean")
      .map((t) => [Number(t.params[n]), t.objective]).sort((a, b) => a[0] - b[0]);
    if (!pts.length) continue;
    const log = (sweepView.sweep.spec.space[n].log_uniform || sweepView.sweep.spec.space[n].int_log) ? 3 : 1;
    chartIn($("sweep-scatter"), `scatter-${n}`, {
      title: `${n} against ${trials.metric}`, scales: {x: {time: false, distr: log}},
      series: [{label: n}, {label: trials.metric, stroke: COLORS[0], paths: () => null, points: {size: 7, fill: COLORS[0]}}],
      axes: [{values: ticks}, {values: ticks}],
    }, [pts.map((p) => p[0]), pts.map((p) => p[1])]);
  }
}
