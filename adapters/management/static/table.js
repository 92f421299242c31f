// One sortable, searchable table: columns describe how to show a row; actions add buttons.
const get = (row, key) => key.split(".").reduce((v, k) => (v == null ? v : v[k]), row);

export function formatNumber(n) {
  if (n == null || Number.isNaN(n)) return "–";
  if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

export function formatBytes(n) {
  if (n == null || n < 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

export class Table {
  constructor(table, { onSort } = {}) {
    this.table = table;
    this.head = table.querySelector("thead");
    this.body = table.querySelector("tbody");
    this.sort = null;
    this.onSort = onSort;
  }

  render(columns, rows, { filter = "", actions = null, key = (r) => r.name } = {}) {
    const needle = filter.trim().toLowerCase();
    let shown = needle ? rows.filter((r) => columns.some((c) => String(get(r, c.key) ?? "").toLowerCase().includes(needle))) : rows.slice();
    if (this.sort) {
      const { key: sortKey, dir } = this.sort;
      shown.sort((a, b) => {
        const x = get(a, sortKey), y = get(b, sortKey);
        const cmp = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
        return dir === "ascending" ? cmp : -cmp;
      });
    }
    this.renderHead(columns, actions);
    const max = {};
    for (const c of columns) if (c.bar) max[c.key] = Math.max(1, ...shown.map((r) => get(r, c.key) || 0));
    const fragment = document.createDocumentFragment();
    for (const row of shown) {
      const tr = document.createElement("tr");
      tr.dataset.name = key(row);
      for (const c of columns) {
        const td = document.createElement("td");
        const value = get(row, c.key);
        td.textContent = c.format ? c.format(value, row) : (value ?? "");
        td.dataset.col = c.key;
        if (c.num) td.classList.add("num");
        if (c.hidePhone) td.classList.add("hide-phone");
        if (c.bar && value) {
          const bar = document.createElement("span");
          bar.className = "bar";
          bar.style.width = `${Math.max(2, Math.round(60 * value / max[c.key]))}px`;
          td.appendChild(bar);
        }
        tr.appendChild(td);
      }
      if (actions) {
        const td = document.createElement("td");
        td.className = "actions";
        for (const action of actions(row)) {
          const button = document.createElement("button");
          button.textContent = action.label;
          button.className = "small " + (action.danger ? "danger" : "secondary");
          button.dataset.action = action.id;
          button.addEventListener("click", () => action.run(row));
          td.appendChild(button);
        }
        tr.appendChild(td);
      }
      fragment.appendChild(tr);
    }
    this.body.replaceChildren(fragment);
    return { shown: shown.length, total: rows.length };
  }

  renderHead(columns, actions) {
    const tr = document.createElement("tr");
    for (const c of columns) {
      const th = document.createElement("th");
      th.textContent = c.label;
      th.dataset.key = c.key;
      if (c.num) th.classList.add("num");
      if (c.hidePhone) th.classList.add("hide-phone");
      if (this.sort && this.sort.key === c.key) th.setAttribute("aria-sort", this.sort.dir);
      th.addEventListener("click", () => {
        const dir = this.sort && this.sort.key === c.key && this.sort.dir === "descending" ? "ascending" : "descending";
        this.sort = { key: c.key, dir };
        if (this.onSort) this.onSort();
      });
      tr.appendChild(th);
    }
    if (actions) tr.appendChild(document.createElement("th"));
    this.head.replaceChildren(tr);
  }
}
