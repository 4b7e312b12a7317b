// licd-stub dashboard: the live event feed (Server-Sent Events from /ui/events) and, on the
// overview, a refresh of the devices table when an event arrives or when a device's expected
// state changes by time alone (a lease running out sends no message: the table says when,
// in data-refresh-in). Text goes into the page with textContent only; the refreshed table is
// HTML the server rendered and escaped.
"use strict";

(function () {
  var list = document.getElementById("events");
  if (!list || !window.EventSource) {
    return;
  }
  var live = document.getElementById("devices-live");
  var pending = null;
  var timed = null;

  // Refresh once more when the soonest expected state changes (at most an hour ahead: the
  // table is re-rendered long before then anyway).
  function scheduleTimed() {
    if (timed !== null) { clearTimeout(timed); timed = null; }
    var table = document.getElementById("devices-table");
    var secs = table ? parseInt(table.getAttribute("data-refresh-in"), 10) : NaN;
    if (!isNaN(secs) && secs >= 0) {
      timed = setTimeout(function () { timed = null; refreshDevices(); },
                         Math.min(secs, 3600) * 1000 + 500);
    }
  }

  function refreshDevices() {
    pending = null;
    fetch("/ui/fragments/devices", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && live) { live.innerHTML = html; scheduleTimed(); }
      })
      .catch(function () {});
  }

  if (live) { scheduleTimed(); }

  var source = new EventSource(list.getAttribute("data-source"));
  source.onmessage = function (msg) {
    var e;
    try { e = JSON.parse(msg.data); } catch (err) { return; }
    var item = document.createElement("li");
    item.className = "event " + e.kind;
    var when = document.createElement("time");
    when.textContent = new Date().toLocaleTimeString();
    var what = document.createElement("span");
    what.textContent = " " + e.kind + " " + (e.tenant || "") + "/" + (e.device || "") + ": " + e.text;
    item.appendChild(when);
    item.appendChild(what);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 100) { list.removeChild(list.lastChild); }
    if (live && pending === null) { pending = setTimeout(refreshDevices, 300); }
  };
})();
