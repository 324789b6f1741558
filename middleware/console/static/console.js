// purpose-guard audit console: the live tail (server-sent events) and the overview charts.
"use strict";

(function () {
  const base = document.body.dataset.base || "";

  function cell(row, text, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function startTail(button) {
    const status = document.getElementById("tail-status");
    const body = document.querySelector("#decisions tbody");
    const query = button.dataset.query;
    const source = new EventSource(base + "/decisions/tail" + (query ? "?" + query : ""));
    let count = 0;
    source.addEventListener("open", () => { status.textContent = "Live: new decisions appear at the top."; });
    source.addEventListener("error", () => { status.textContent = "Live tail reconnecting…"; });
    source.addEventListener("decision", (message) => {
      const d = JSON.parse(message.data);
      const empty = body.querySelector("tr.empty");
      if (empty) { empty.remove(); }
      const tr = document.createElement("tr");
      tr.className = (d.allowed ? "allowed" : "denied") + " new";
      cell(tr, d.ts, base + "/events/" + encodeURIComponent(d.event_id));
      [d.caller, d.party_type, d.country, d.purpose, d.categories,
       d.allowed ? "allowed" : "denied", d.reason, d.route, String(d.status)].forEach((t) => cell(tr, t));
      body.insertBefore(tr, body.firstChild);
      count += 1;
      status.textContent = "Live: " + count + " new decision(s).";
    });
    return source;
  }

  const toggle = document.getElementById("tail-toggle");
  if (toggle) {
    let source = null;
    toggle.addEventListener("click", () => {
      if (source) {
        source.close();
        source = null;
        toggle.textContent = "Start live tail";
        toggle.setAttribute("aria-pressed", "false");
        document.getElementById("tail-status").textContent = "Live tail stopped.";
      } else {
        source = startTail(toggle);
        toggle.textContent = "Stop live tail";
        toggle.setAttribute("aria-pressed", "true");
      }
    });
  }

  const PALETTE = ["#2e7d3a", "#b42323", "#12325e", "#c77700", "#6a3d9a", "#1f78b4",
                   "#8c564b", "#e7298a", "#525252", "#17becf", "#bcbd22", "#ff7f0e"];

  function bar(id, labels, datasets, options) {
    const el = document.getElementById(id);
    // eslint-disable-next-line no-undef
    return new Chart(el, {
      type: "bar",
      data: { labels: labels, datasets: datasets },
      options: Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
                               plugins: { legend: { position: "bottom" } } }, options || {}),
    });
  }

  function drawCharts(holder) {
    const status = document.getElementById("overview-status");
    fetch(holder.dataset.url, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((data) => {
        if (data.error) { status.textContent = data.error; return; }
        const series = data.over_time.series;
        bar("c-time", data.over_time.labels, Object.keys(series).map((reason, i) => ({
          label: reason, data: series[reason],
          backgroundColor: reason === "allowed" ? PALETTE[0] : PALETTE[1 + (i % (PALETTE.length - 1))],
        })), { scales: { x: { stacked: true }, y: { stacked: true } } });
        const split = (rows) => [
          { label: "allowed", data: rows.map((r) => r.total - r.denied), backgroundColor: PALETTE[0] },
          { label: "denied", data: rows.map((r) => r.denied), backgroundColor: PALETTE[1] }];
        const stacked = { indexAxis: "y", scales: { x: { stacked: true }, y: { stacked: true } } };
        bar("c-callers", data.callers.map((r) => r.key), split(data.callers), stacked);
        bar("c-purposes", data.purposes.map((r) => r.key), split(data.purposes), stacked);
        const t = data.transfers;
        bar("c-transfers", t.countries, Object.keys(t.series).map((s, i) => ({
          label: s, data: t.series[s], backgroundColor: PALETTE[2 + (i % (PALETTE.length - 2))] })),
          { scales: { x: { stacked: true }, y: { stacked: true } } });
        bar("c-routes", data.denied_routes.map((r) => r.key),
            [{ label: "denied", data: data.denied_routes.map((r) => r.denied), backgroundColor: PALETTE[1] }],
            { indexAxis: "y" });
        const total = data.callers.reduce((n, r) => n + r.total, 0);
        status.textContent = total ? "Charts of decisions since " + data.since + "."
                                   : "No decision since " + data.since + ".";
        holder.dataset.ready = "true";
      })
      .catch((err) => { status.textContent = "Cannot load the charts: " + err; });
  }

  if (document.getElementById("integrity-running")) {
    window.setTimeout(() => { window.location.replace(window.location.pathname); }, 1000);
  }

  const charts = document.getElementById("charts");
  if (charts) {
    if (window.Chart) { drawCharts(charts); } else { window.addEventListener("load", () => drawCharts(charts)); }
  }
})();
