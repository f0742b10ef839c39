// CoroNet report tables: click a header to sort (numbers as numbers, a second click reverses),
// and a filter box above tables of many rows. Shipped with the report: no network, works from file://.
(function () {
  "use strict";
  var MANY = 8;
  function value(cell) {
    var text = cell ? cell.textContent.trim() : "";
    var number = parseFloat(text);
    return text !== "" && !isNaN(number) && /^[-+]?[\d.]/.test(text) ? number : text.toLowerCase();
  }
  function sortable(table) {
    var head = table.tHead;
    if (!head || !table.tBodies.length || table.querySelector("[rowspan], [colspan]")) return;
    var headers = head.rows[head.rows.length - 1].cells;
    Array.prototype.forEach.call(headers, function (th, column) {
      th.style.cursor = "pointer";
      th.title = "sort by this column";
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var ascending = th.getAttribute("data-sorted") !== "ascending";
        rows.sort(function (a, b) {
          var x = value(a.cells[column]), y = value(b.cells[column]);
          if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;  // numbers before dashes
          return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("data-sorted"); });
        th.setAttribute("data-sorted", ascending ? "ascending" : "descending");
      });
    });
  }
  function filterable(table) {
    if (!table.tBodies.length || table.tBodies[0].rows.length < MANY) return;
    var box = document.createElement("input");
    box.type = "search";
    box.placeholder = "filter rows";
    box.className = "filter";
    box.setAttribute("aria-label", "filter the rows of " + (table.id || "this table"));
    box.addEventListener("input", function () {
      var words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.textContent.toLowerCase();
        row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      });
    });
    table.parentNode.insertBefore(box, table);
  }
  document.querySelectorAll("table.dataframe").forEach(function (table) {
    sortable(table);
    filterable(table);
  });
})();
