/* Job monitor dashboards: charts (Chart.js, served locally), auto refresh fed by the live stream with a
   polling fallback, paused while the tab is hidden. The server renders every number; this file only draws
   the JSON the page embeds and swaps in a freshly rendered body. */
(function () {
  "use strict";

  const root = document.querySelector("[data-jm-dashboard]");
  if (!root) return;
  const body = document.getElementById("jm-body");
  const status = document.getElementById("jm-status");
  const refreshSelect = document.getElementById("jm-refresh");
  const refreshNowButton = document.getElementById("jm-refresh-now");
  const controls = document.getElementById("jm-controls");
  let charts = [];
  let timer = null;
  let source = null;
  let mode = "";

  // --- charts --------------------------------------------------------------------------------------------

  function cssVar(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function palette() {
    return {
      fg: cssVar("--body-fg", "#333"), quiet: cssVar("--body-quiet-color", "#666"),
      grid: cssVar("--hairline-color", "#e8e8e8"), ok: cssVar("--jm-ok", "#2e7d32"),
      fail: cssVar("--jm-fail", "#c62828"), run: cssVar("--jm-run", "#1565c0"), wait: cssVar("--jm-wait", "#8a6100"),
      other: cssVar("--jm-other", "#6b6b6b"), savings: cssVar("--jm-savings", "#6a1b9a"),
    };
  }

  function readJSON(id) {
    const element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function label(iso, step) {
    const date = new Date(iso);
    if (step >= 86400) return date.toLocaleDateString([], {month: "short", day: "numeric"});
    return date.toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
  }

  function stepOf(points) {
    if (!points || points.length < 2) return 3600;
    return (new Date(points[1].start) - new Date(points[0].start)) / 1000;
  }

  function axes(p, extra) {
    const scale = {ticks: {color: p.quiet}, grid: {color: p.grid}, border: {color: p.grid}};
    return Object.assign({x: Object.assign({}, scale), y: Object.assign({beginAtZero: true}, scale)}, extra || {});
  }

  function base(p) {
    return {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: {legend: {labels: {color: p.fg}}, tooltip: {mode: "index", intersect: false}},
    };
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 60) return value.toFixed(1) + " s";
    return Math.floor(value / 60) + " min " + String(Math.round(value % 60)).padStart(2, "0") + " s";
  }

  // Greedy lane assignment: a bar goes into the first lane whose last bar ended before it started, so bars
  // that ran at the same time always sit in different lanes and overlaps show as stacked rows.
  function lanes(bars, now) {
    const ends = [];
    return bars.map(function (bar) {
      const start = Date.parse(bar.start);
      const end = bar.end ? Date.parse(bar.end) : now;
      let lane = ends.findIndex(function (last) { return last <= start; });
      if (lane === -1) { lane = ends.length; ends.push(end); } else { ends[lane] = end; }
      return {bar: bar, start: start, end: Math.max(end, start + 1), lane: lane};
    });
  }

  function outcome(status) {
    if (status === "SUCCESS") return "ok";
    if (status === "FAILURE" || status === "LOST") return "fail";
    if (status === "running") return "run";
    return "other";
  }

  const builders = {
    throughput: function (points, p) {
      const step = stepOf(points);
      return {type: "bar", data: {labels: points.map(function (x) { return label(x.start, step); }),
        datasets: [{label: gettext("Jobs finished"), data: points.map(function (x) { return x.total; }),
                    backgroundColor: p.run}]},
        options: Object.assign(base(p), {scales: axes(p)})};
    },
    outcomes: function (points, p) {
      const step = stepOf(points);
      return {type: "line", data: {labels: points.map(function (x) { return label(x.start, step); }), datasets: [
        {label: gettext("Succeeded"), data: points.map(function (x) { return x.successful; }), borderColor: p.ok,
         backgroundColor: p.ok, tension: 0.2, pointRadius: 0},
        {label: gettext("Failed"), data: points.map(function (x) { return x.failed; }), borderColor: p.fail,
         backgroundColor: p.fail, tension: 0.2, pointRadius: 0}]},
        options: Object.assign(base(p), {scales: axes(p)})};
    },
    timeline: function (bars, p) {
      const placed = lanes(bars, Date.now());
      const laneCount = placed.reduce(function (n, item) { return Math.max(n, item.lane + 1); }, 1);
      const groups = {ok: [], fail: [], run: [], other: []};
      placed.forEach(function (item) {
        groups[outcome(item.bar.status)].push({x: [item.start, item.end], y: item.lane, bar: item.bar});
      });
      const names = {ok: gettext("succeeded"), fail: gettext("failed"), run: gettext("running"), other: gettext("other")};
      const datasets = Object.keys(groups).map(function (key) {
        return {label: names[key], data: groups[key], backgroundColor: p[key], borderColor: p[key],
                borderWidth: 0, borderSkipped: false, minBarLength: 2, barPercentage: 0.8, categoryPercentage: 1,
                grouped: false};
      });
      const times = placed.flatMap(function (item) { return [item.start, item.end]; });
      return {type: "bar", data: {datasets: datasets},
        options: Object.assign(base(p), {
          indexAxis: "y", parsing: {xAxisKey: "x", yAxisKey: "y"},
          scales: {
            x: {type: "linear", min: times.length ? Math.min.apply(null, times) : undefined,
                max: times.length ? Math.max.apply(null, times) : undefined,
                ticks: {color: p.quiet, maxTicksLimit: 8, callback: function (value) {
                  return new Date(value).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}); }},
                grid: {color: p.grid}},
            y: {type: "linear", reverse: true, min: -0.5, max: laneCount - 0.5, ticks: {display: false},
                grid: {display: false}, title: {display: true, text: gettext("concurrent slots"), color: p.quiet}},
          },
          plugins: {legend: {labels: {color: p.fg}}, tooltip: {mode: "nearest", intersect: true, callbacks: {
            title: function (items) { return items[0].raw.bar.task_name; },
            label: function (item) {
              const bar = item.raw.bar;
              return [gettext("id") + ": " + bar.task_id, gettext("start") + ": " + new Date(bar.start).toLocaleString(),
                      gettext("end") + ": " + (bar.end ? new Date(bar.end).toLocaleString() : gettext("still running")),
                      gettext("duration") + ": " + seconds(bar.duration), gettext("status") + ": " + bar.status];
            }}}},
        })};
    },
    batch_queues: function (queues, p) {
      const keys = ["pending", "processing", "completed", "failed"];
      const colours = [p.wait, p.run, p.ok, p.fail];
      return {type: "bar", data: {labels: keys.map(function (k) { return gettext(k); }),
        datasets: [{label: gettext("Requests"), data: keys.map(function (k) { return queues[k]; }),
                    backgroundColor: colours}]},
        options: Object.assign(base(p), {scales: axes(p), plugins: {legend: {display: false}}})};
    },
    batch_throughput: function (points, p) {
      const step = stepOf(points);
      return {type: "bar", data: {labels: points.map(function (x) { return label(x.start, step); }), datasets: [
        {label: gettext("Completed requests"), data: points.map(function (x) { return x.completed; }),
         backgroundColor: p.ok, stack: "r"},
        {label: gettext("Failed requests"), data: points.map(function (x) { return x.failed; }),
         backgroundColor: p.fail, stack: "r"}]},
        options: Object.assign(base(p), {scales: axes(p, {x: {stacked: true, ticks: {color: p.quiet}, grid: {color: p.grid}},
                                                           y: {stacked: true, beginAtZero: true, ticks: {color: p.quiet}, grid: {color: p.grid}}})})};
    },
    batch_savings: function (points, p) {
      const step = stepOf(points);
      return {type: "line", data: {labels: points.map(function (x) { return label(x.start, step); }), datasets: [
        {label: gettext("Savings ($)"), data: points.map(function (x) { return Number(x.savings); }),
         borderColor: p.savings, backgroundColor: p.savings, yAxisID: "y", tension: 0.2, pointRadius: 0},
        {label: gettext("Savings (%)"), data: points.map(function (x) { return x.savings_percentage === null ? null : Number(x.savings_percentage); }),
         borderColor: p.ok, backgroundColor: p.ok, yAxisID: "y1", borderDash: [4, 4], tension: 0.2, pointRadius: 0}]},
        options: Object.assign(base(p), {scales: axes(p, {y1: {position: "right", beginAtZero: true, max: 100,
          ticks: {color: p.quiet}, grid: {drawOnChartArea: false}}})})};
    },
  };

  function gettext(text) {
    return window.gettext ? window.gettext(text) : text;
  }

  function drawCharts() {
    charts.forEach(function (chart) { chart.destroy(); });
    charts = [];
    if (!window.Chart) {
      setStatus(gettext("Charts unavailable: the chart library did not load."));
      return;
    }
    const p = palette();
    window.Chart.defaults.color = p.fg;
    window.Chart.defaults.borderColor = p.grid;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      const build = builders[canvas.dataset.chart];
      const data = readJSON(canvas.dataset.source);
      if (!build || data === null) return;
      charts.push(new window.Chart(canvas, build(data, p)));
      canvas.dataset.drawn = "true";
    });
  }

  // --- refresh -------------------------------------------------------------------------------------------

  function setStatus(text) {
    if (status) status.textContent = text;
  }

  function interval() {
    return refreshSelect ? parseInt(refreshSelect.value, 10) || 0 : 0;
  }

  async function refreshNow() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    setStatus(gettext("Refreshing…"));
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}});
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      body.innerHTML = await response.text();
      drawCharts();
      setStatus(describeMode());
      root.dispatchEvent(new CustomEvent("jm:refreshed"));
    } catch (error) {
      setStatus(gettext("Refresh failed:") + " " + error.message);
    }
  }

  function describeMode() {
    if (!interval()) return "";
    return mode === "live" ? gettext("Live") : gettext("Polling");
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    const every = interval();
    if (every && !document.hidden) {
      timer = window.setTimeout(async function () {
        await refreshNow();
        schedule();
      }, every * 1000);
    }
  }

  // The live stream pushes the metrics every few seconds: queue depths and the live cards update at once;
  // the whole body is re-rendered on the chosen interval. Without a stream (not mounted, refused, too
  // many open) the interval timer alone keeps polling.
  function applyLive(snapshot) {
    (snapshot.queues || []).forEach(function (row) {
      const cell = body.querySelector('[data-live-queue="' + CSS.escape(row.queue) + '"][data-field="waiting"]');
      if (cell) cell.textContent = row.waiting === null ? "–" : row.waiting;
    });
    const waiting = body.querySelector('[data-live="waiting"]');
    if (waiting && snapshot.totals) {
      waiting.textContent = snapshot.totals.waiting === null ? "–" : snapshot.totals.waiting;
    }
  }

  function openStream() {
    closeStream();
    const url = root.dataset.liveUrl;
    if (!interval() || document.hidden || !url || !window.EventSource) {
      mode = "polling";
      setStatus(describeMode());
      return;
    }
    source = new EventSource(url);
    mode = "live";
    source.addEventListener("metrics", function (event) { applyLive(JSON.parse(event.data)); });
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        mode = "polling";
        setStatus(describeMode());
      }
    };
    setStatus(describeMode());
  }

  function closeStream() {
    if (source) source.close();
    source = null;
  }

  function start() {
    schedule();
    openStream();
  }

  function stop() {
    window.clearTimeout(timer);
    timer = null;
    closeStream();
  }

  if (refreshSelect) {
    const fromUrl = new URL(window.location.href).searchParams.get("refresh");
    const saved = window.localStorage.getItem("jm-refresh");
    if (fromUrl === null && saved !== null && refreshSelect.querySelector('option[value="' + saved + '"]')) {
      refreshSelect.value = saved;
    }
    refreshSelect.addEventListener("change", function () {
      window.localStorage.setItem("jm-refresh", refreshSelect.value);
      const url = new URL(window.location.href);
      url.searchParams.set("refresh", refreshSelect.value);
      window.history.replaceState(null, "", url);
      start();
    });
  }
  if (refreshNowButton) refreshNowButton.addEventListener("click", refreshNow);
  if (controls) {
    controls.querySelectorAll("[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () {
        const custom = controls.querySelector(".jm-custom-range");
        if (select.name === "range" && custom) {
          custom.hidden = select.value !== "custom";
          if (select.value === "custom") return; // wait for the dates, then Apply
        }
        controls.requestSubmit();
      });
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
      setStatus(interval() ? gettext("Paused while the tab is hidden") : "");
    } else if (interval()) {
      refreshNow();
      start();
    }
  });
  // Redraw with the other palette when the admin's theme toggle switches light/dark.
  new MutationObserver(drawCharts).observe(document.documentElement, {attributes: true, attributeFilter: ["data-theme"]});

  drawCharts();
  start();
})();
