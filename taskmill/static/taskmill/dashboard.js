/* taskmill dashboard: poll dashboard.json and redraw the numbers in place.
 *
 * Everything is written with textContent / setAttribute, never innerHTML: task names,
 * progress messages and worker ids come from jobs and must never become markup.
 * The page is readable without this script (the server renders the first paint).
 */
(function () {
  "use strict";

  var root = document.getElementById("tm-dashboard");
  if (!root) { return; }
  var url = root.getAttribute("data-url");
  var interval = parseInt(root.getAttribute("data-interval"), 10) || 2000;
  var SVG = "http://www.w3.org/2000/svg";
  var CHART_W = 600, CHART_H = 120;

  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "\u2013"; }
    if (seconds < 120) { return seconds.toFixed(1) + "s"; }
    if (seconds < 7200) { return Math.round(seconds / 60) + "m"; }
    return (seconds / 3600).toFixed(1) + "h";
  }

  function percent(fraction) {
    if (fraction === null || fraction === undefined) { return "\u2013"; }
    return (fraction * 100).toFixed(1) + "%";
  }

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (className) { node.className = className; }
    return node;
  }

  function row(cells, className) {
    var tr = el("tr", null, className);
    cells.forEach(function (cell) {
      tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
    });
    return tr;
  }

  function wrap(node) {
    var td = el("td");
    td.appendChild(node);
    return td;
  }

  function fill(id, rows, emptyText, columns) {
    var body = document.getElementById(id);
    var fragment = document.createDocumentFragment();
    rows.forEach(function (tr) { fragment.appendChild(tr); });
    if (!rows.length) {
      var empty = el("tr", null, "tm-empty");
      var td = el("td", emptyText);
      td.colSpan = columns;
      empty.appendChild(td);
      fragment.appendChild(empty);
    }
    body.replaceChildren(fragment);
  }

  function progressCell(job) {
    var span = el("span");
    var p = job.progress;
    if (p) {
      if (p.fraction !== null && p.fraction !== undefined) {
        var bar = el("progress", null, "tm-progress");
        bar.max = 1;
        bar.value = p.fraction;
        span.appendChild(bar);
        span.appendChild(document.createTextNode(" "));
        span.appendChild(el("span", percent(p.fraction), "tm-pct"));
      } else {
        span.appendChild(el("span", p.current, "tm-pct"));
      }
      span.appendChild(document.createTextNode(" "));
      span.appendChild(el("span", p.message, "tm-msg"));
    } else {
      span.textContent = "\u2013";
    }
    if (job.cancel_requested) {
      span.appendChild(document.createTextNode(" "));
      span.appendChild(el("span", "cancel requested", "tm-cancel"));
    }
    return span;
  }

  function drawChart(points) {
    var svg = document.getElementById("tm-chart");
    var peak = 1;
    points.forEach(function (p) { peak = Math.max(peak, p.succeeded + p.failed); });
    var step = CHART_W / Math.max(points.length, 1);
    var fragment = document.createDocumentFragment();
    points.forEach(function (p, i) {
      var ok = p.succeeded / peak * CHART_H;
      var bad = p.failed / peak * CHART_H;
      var g = document.createElementNS(SVG, "g");
      var title = document.createElementNS(SVG, "title");
      title.textContent = p.minute.slice(11, 16) + " UTC: " + p.succeeded + " succeeded, " +
        p.failed + " failed";
      g.appendChild(title);
      [["tm-bar-ok", CHART_H - ok, ok], ["tm-bar-bad", CHART_H - ok - bad, bad]].forEach(
        function (spec) {
          var rect = document.createElementNS(SVG, "rect");
          rect.setAttribute("class", spec[0]);
          rect.setAttribute("x", (i * step).toFixed(2));
          rect.setAttribute("y", spec[1].toFixed(2));
          rect.setAttribute("width", Math.max(step - 2, 1).toFixed(2));
          rect.setAttribute("height", spec[2].toFixed(2));
          g.appendChild(rect);
        });
      fragment.appendChild(g);
    });
    svg.replaceChildren(fragment);
  }

  // A queue past the count's cap shows what was counted, and "+": there is more.
  function atLeast(count, capped) {
    return capped ? count + "+" : count;
  }

  function render(data) {
    Object.keys(data.totals).forEach(function (key) {
      var node = root.querySelector('[data-total="' + key + '"]');
      if (!node) {
        return;
      }
      var value = data.totals[key];
      if (key === "failure_rate") {
        value = percent(value);
      } else if (key === "waiting" || key === "scheduled") {
        value = atLeast(value, data.totals.capped);
      }
      node.textContent = value;
    });
    drawChart(data.throughput);
    fill("tm-queues", data.queues.map(function (q) {
      return row([q.queue, atLeast(q.waiting, q.capped), atLeast(q.scheduled, q.capped),
                  q.running, q.succeeded, q.failed, age(q.oldest_waiting_age)]);
    }), "No jobs.", 7);
    document.getElementById("tm-paused-list").textContent = data.paused.join(", ");
    document.getElementById("tm-paused").hidden = data.paused.length === 0;
    fill("tm-running", data.running.map(function (job) {
      var tr = row([job.task, job.queue, job.worker, job.attempt + " / " + job.max_attempts,
                    age(job.running_for), progressCell(job)]);
      tr.setAttribute("data-job", job.id);
      return tr;
    }), "Nothing is running.", 6);
    var workers = [];
    data.hosts.forEach(function (host) {
      host.workers.forEach(function (w) {
        workers.push(row([host.hostname, w.id, w.threads, w.queues.join(", "),
                          age(w.heartbeat_age) + " ago"], w.alive ? "tm-alive" : "tm-stale"));
      });
    });
    fill("tm-workers", workers, "No live workers.", 5);
    fill("tm-slowest", data.slowest.map(function (t) {
      return row([t.task, t.count, age(t.avg_seconds), age(t.p95_seconds), age(t.max_seconds)]);
    }), "No finished jobs.", 5);
    fill("tm-failing", data.failing.map(function (t) {
      return row([t.task, t.failed, t.succeeded, percent(t.failure_rate)]);
    }), "No failures.", 4);
    var updated = document.getElementById("tm-updated");
    updated.setAttribute("datetime", data.time);
    updated.textContent = data.time.slice(11, 19) + " UTC";
  }

  function setStatus(state, text) {
    var node = document.getElementById("tm-status");
    node.setAttribute("data-state", state);
    node.textContent = text;
  }

  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) { render(data); setStatus("live", "\u25cf live"); })
      .catch(function (error) { setStatus("error", "not updating: " + error.message); })
      .then(function () { window.setTimeout(poll, interval); });
  }

  setStatus("live", "\u25cf live");
  window.setTimeout(poll, interval);
}());
