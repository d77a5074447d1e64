/* foxhunt site: copy buttons, the index's search and filters, the IOC table filter.
   Plain JavaScript, no libraries; the pages work without it (every row shown, text selectable). */
(function () {
  "use strict";

  var live = document.getElementById("live");

  function announce(message) {
    if (live) {
      live.textContent = message;
    }
  }

  /* Copy through a hidden textarea: for pages where the Clipboard API is missing or refused. */
  function copyWithSelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var done = false;
    try {
      done = document.execCommand("copy");
    } catch (error) {
      done = false;
    }
    area.remove();
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return copyWithSelection(text);
      });
    }
    return copyWithSelection(text);
  }

  function showResult(button, message) {
    if (!button.dataset.label) {
      button.dataset.label = button.textContent;
    }
    button.textContent = message;
    announce(message);
    window.setTimeout(function () {
      button.textContent = button.dataset.label;
    }, 1600);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy], button[data-copy-target]");
    if (!button) {
      return;
    }
    var text = button.dataset.copy;
    if (text === undefined) {
      var source = document.getElementById(button.dataset.copyTarget);
      text = source ? source.textContent : "";
    }
    copyText(text).then(
      function () { showResult(button, "Copied"); },
      function () { showResult(button, "Copy failed: select the text"); }
    );
  });

  /* "1[.]2[.]3[.]4", "hxxps[://]evil[.]com" -> what the data holds */
  function refang(text) {
    return text.trim().toLowerCase()
      .replace(/\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)/g, ".")
      .replace(/\[:\/\/\]/g, "://")
      .replace(/\[:\]|\(:\)/g, ":")
      .replace(/^hxxp/, "http")
      .replace(/^fxp/, "ftp");
  }

  /* Index: search and filters over the data embedded in the page. */
  function setUpFilters() {
    var form = document.getElementById("filters");
    var dataNode = document.getElementById("site-data");
    if (!form || !dataNode) {
      return;
    }
    var data = JSON.parse(dataNode.textContent);
    var status = document.getElementById("result-count");
    var empty = document.getElementById("no-results");
    var rows = {};
    document.querySelectorAll("tr[data-slug]").forEach(function (row) {
      rows[row.dataset.slug] = row;
    });

    function apply() {
      var query = refang(form.elements.q.value);
      var family = form.elements.family.value;
      var iocType = form.elements.ioc_type.value;
      var threatType = form.elements.threat_type.value;
      var minConfidence = parseInt(form.elements.min_confidence.value, 10) || 0;
      var families = 0;
      var iocs = 0;
      data.families.forEach(function (entry) {
        var row = rows[entry.slug];
        if (!row) {
          return;
        }
        var count = 0;
        entry.profiles.forEach(function (profile) {
          /* [ioc_type, threat_type, confidence (-1: none given), number of IOCs] */
          if (iocType && profile[0] !== iocType) { return; }
          if (threatType && profile[1] !== threatType) { return; }
          if (minConfidence > 0 && profile[2] < minConfidence) { return; }
          count += profile[3];
        });
        var found = !query || entry.text.indexOf(query) !== -1 ||
          entry.values.some(function (value) { return value.indexOf(query) !== -1; });
        var visible = found && count > 0 && (!family || family === entry.slug);
        row.hidden = !visible;
        var cell = row.querySelector(".count");
        var total = parseInt(cell.dataset.total, 10);
        cell.textContent = count === total ? String(total) : count + " of " + total;
        if (visible) {
          families += 1;
          iocs += count;
        }
      });
      var message = families + (families === 1 ? " family, " : " families, ") + iocs + (iocs === 1 ? " IOC" : " IOCs");
      if (families !== data.families.length) {
        message += " (of " + data.families.length + " families)";
      }
      status.textContent = message;
      empty.hidden = families > 0;
    }

    form.hidden = false;
    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    form.addEventListener("reset", function () { window.setTimeout(apply, 0); });
    apply();
  }

  /* Family page: filter the rows of a table by their text and real value. */
  function setUpRowFilters() {
    document.querySelectorAll("input[data-filter-rows]").forEach(function (input) {
      var table = document.getElementById(input.dataset.filterRows);
      var empty = document.querySelector("[data-empty-for='" + input.dataset.filterRows + "']");
      if (!table) {
        return;
      }
      var rows = Array.prototype.slice.call(table.tBodies[0].rows);
      var texts = rows.map(function (row) {
        return (row.textContent + " " + (row.dataset.search || "")).toLowerCase();
      });
      input.addEventListener("input", function () {
        var query = refang(input.value);
        var shown = 0;
        rows.forEach(function (row, index) {
          var visible = !query || texts[index].indexOf(query) !== -1;
          row.hidden = !visible;
          shown += visible ? 1 : 0;
        });
        if (empty) {
          empty.hidden = shown > 0;
        }
      });
    });
  }

  setUpFilters();
  setUpRowFilters();
})();
