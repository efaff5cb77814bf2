// The operations dashboard: fetches /monitoring/dashboard/data and draws plain SVG charts.
(function () {
  "use strict";
  var script = document.currentScript;
  var source = script.dataset.source;
  var refreshMs = (parseInt(script.dataset.refresh, 10) || 15) * 1000;
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#2f6fdf", "#1a9f5b", "#e08a00", "#d64545", "#8a55c9", "#1aa5b8"];
  var W = 600, H = 200, LEFT = 34, RIGHT = 8, TOP = 8, BOTTOM = 40;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function clear(svg) { while (svg.firstChild) { svg.removeChild(svg.firstChild); } }

  function axes(svg, labels, max) {
    el("line", {x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM, "class": "axis"}, svg);
    el("line", {x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM, "class": "axis"}, svg);
    el("text", {x: 2, y: TOP + 8}, svg).textContent = String(max);
    el("text", {x: 2, y: H - BOTTOM}, svg).textContent = "0";
    [0, Math.floor(labels.length / 2), labels.length - 1].forEach(function (i) {
      if (labels[i] === undefined) { return; }
      var x = LEFT + (W - LEFT - RIGHT) * i / Math.max(1, labels.length - 1);
      el("text", {x: x - 12, y: H - BOTTOM + 12}, svg).textContent = labels[i];
    });
  }

  function legend(svg, names) {
    names.forEach(function (name, i) {
      var x = LEFT + i * 95;
      el("rect", {x: x, y: H - 16, width: 10, height: 10, fill: COLORS[i % COLORS.length]}, svg);
      el("text", {x: x + 14, y: H - 7}, svg).textContent = name;
    });
  }

  // series: {name: [number|null, ...]} over the same minutes.
  function lineChart(svg, labels, series) {
    clear(svg);
    var names = Object.keys(series);
    var max = 1;
    names.forEach(function (name) {
      series[name].forEach(function (v) { if (v !== null && v > max) { max = v; } });
    });
    axes(svg, labels, max);
    names.forEach(function (name, i) {
      var points = [];
      series[name].forEach(function (v, j) {
        if (v === null || v === undefined) { return; }
        var x = LEFT + (W - LEFT - RIGHT) * j / Math.max(1, labels.length - 1);
        var y = H - BOTTOM - (H - BOTTOM - TOP) * v / max;
        points.push(x.toFixed(1) + "," + y.toFixed(1));
        if (v > 0) {
          el("circle", {cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5, fill: COLORS[i % COLORS.length],
                        "class": "point", "data-series": name, "data-value": v}, svg);
        }
      });
      if (points.length) {
        el("polyline", {points: points.join(" "), fill: "none", "stroke-width": 1.5,
                        stroke: COLORS[i % COLORS.length], "data-series": name}, svg);
      }
    });
    legend(svg, names);
  }

  function campaignChart(svg, campaigns) {
    clear(svg);
    if (!campaigns.length) {
      el("text", {x: LEFT, y: 40}, svg).textContent = "No active campaigns.";
      return;
    }
    var rowH = Math.min(28, (H - TOP) / campaigns.length);
    campaigns.forEach(function (c, i) {
      var y = TOP + i * rowH;
      var width = (W - 200) * Math.max(0, Math.min(1, c.progress));
      el("text", {x: 2, y: y + rowH / 2 + 3}, svg).textContent = c.name.slice(0, 24);
      el("rect", {x: 150, y: y + 3, width: W - 200, height: rowH - 8, fill: "#e4e8ef"}, svg);
      el("rect", {x: 150, y: y + 3, width: width.toFixed(1), height: rowH - 8, fill: COLORS[1],
                  "class": "bar", "data-campaign": c.id, "data-value": c.progress}, svg);
      el("text", {x: W - 44, y: y + rowH / 2 + 3}, svg).textContent =
        Math.round(c.progress * 100) + "% of " + c.recipients;
    });
  }

  function showAlerts(alerts, queuesError) {
    var box = document.getElementById("alerts");
    box.textContent = "";
    var items = alerts.slice();
    if (queuesError) { items.unshift({severity: "critical", message: "SQS: " + queuesError}); }
    if (!items.length) {
      var ok = document.createElement("p");
      ok.className = "ok";
      ok.textContent = "No active alerts.";
      box.appendChild(ok);
    }
    items.forEach(function (alert) {
      var p = document.createElement("p");
      p.className = "alert " + alert.severity;
      p.textContent = alert.message;
      box.appendChild(p);
    });
  }

  function draw(data) {
    lineChart(document.getElementById("chart-webhooks"), data.minutes, {received: data.webhooks});
    lineChart(document.getElementById("chart-sends"), data.minutes, data.sends);
    lineChart(document.getElementById("chart-queues"), data.minutes, data.queues);
    campaignChart(document.getElementById("chart-campaigns"), data.campaigns);
    showAlerts(data.alerts, data.queues_error);
    document.getElementById("updated").textContent =
      "updated " + new Date(data.generated_at).toLocaleTimeString();
    document.body.dataset.loaded = "true";
  }

  function refresh() {
    fetch(source, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(draw)
      .catch(function (error) {
        document.getElementById("updated").textContent = "update failed: " + error.message;
      })
      .then(function () { window.setTimeout(refresh, refreshMs); });
  }

  refresh();
}());
