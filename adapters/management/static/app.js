// The dashboard: polls the management API, draws the charts, fills the tables, runs actions.
import { call, vh, signIn, signOut, credentials, userName, Unreachable, Unauthorized, ApiError } from "./api.js";
import { Chart } from "./charts.js";
import { Table, formatNumber, formatBytes } from "./table.js";
import { actionsFor, declareQueue } from "./actions.js";

const POLL_MS = 3000;
const $ = (id) => document.getElementById(id);

const state = { tab: "queues", rows: [], lastSeen: null, timer: null, busy: false };
const charts = {
  rates: new Chart($("chart-rates"), "rates"),
  depth: new Chart($("chart-depth"), "depth"),
  memory: new Chart($("chart-memory"), "memory"),
};
const table = new Table($("table"), { onSort: () => render() });
const rate = (v) => formatNumber(v == null ? 0 : Math.round(v * 10) / 10);
const yesNo = (v) => (v ? "yes" : "no");

const TABS = {
  queues: {
    path: "/api/queues",
    columns: [
      { key: "name", label: "Name" },
      { key: "vhost", label: "VHost", hidePhone: true },
      { key: "type", label: "Type", hidePhone: true },
      { key: "messages", label: "Messages", num: true, bar: true, format: formatNumber },
      { key: "messages_ready", label: "Ready", num: true, hidePhone: true, format: formatNumber },
      { key: "messages_unacknowledged", label: "Unacked", num: true, hidePhone: true, format: formatNumber },
      { key: "consumers", label: "Consumers", num: true, format: formatNumber },
      { key: "message_stats.publish_details.rate", label: "In/s", num: true, hidePhone: true, format: rate },
      { key: "message_stats.deliver_get_details.rate", label: "Out/s", num: true, hidePhone: true, format: rate },
    ],
    key: (r) => `${r.vhost}/${r.name}`,
  },
  exchanges: {
    path: "/api/exchanges",
    columns: [
      { key: "name", label: "Name", format: (v) => v || "(AMQP default)" },
      { key: "vhost", label: "VHost", hidePhone: true },
      { key: "type", label: "Type" },
      { key: "durable", label: "Durable", format: yesNo, hidePhone: true },
      { key: "auto_delete", label: "Auto-delete", format: yesNo, hidePhone: true },
      { key: "internal", label: "Internal", format: yesNo, hidePhone: true },
    ],
    key: (r) => `${r.vhost}/${r.name}`,
  },
  bindings: {
    path: "/api/bindings",
    columns: [
      { key: "source", label: "Source", format: (v) => v || "(AMQP default)" },
      { key: "destination", label: "Destination" },
      { key: "destination_type", label: "Type", hidePhone: true },
      { key: "routing_key", label: "Routing key" },
      { key: "vhost", label: "VHost", hidePhone: true },
    ],
    key: (r) => `${r.vhost}/${r.source}/${r.destination_type}/${r.destination}/${r.properties_key}`,
  },
  connections: {
    path: "/api/connections",
    columns: [
      { key: "name", label: "Name" },
      { key: "protocol", label: "Protocol" },
      { key: "user", label: "User" },
      { key: "vhost", label: "VHost", hidePhone: true },
      { key: "channels", label: "Channels", num: true, hidePhone: true },
      { key: "recv_oct", label: "Received", num: true, hidePhone: true, format: formatBytes },
      { key: "send_oct", label: "Sent", num: true, hidePhone: true, format: formatBytes },
    ],
    key: (r) => r.name,
  },
  mqtt: {
    path: "/api/manifold/mqtt/sessions",
    columns: [
      { key: "client_id", label: "Client id" },
      { key: "vhost", label: "VHost", hidePhone: true },
      { key: "connected", label: "Connected", format: yesNo },
      { key: "subscriptions", label: "Subscriptions", format: (s) => (s || []).map((x) => `${x.topic_filter} (QoS ${x.qos})`).join(", ") },
      { key: "queued_messages", label: "Queued", num: true, format: formatNumber },
      { key: "in_flight", label: "In flight", num: true, hidePhone: true },
    ],
    key: (r) => r.client_id,
  },
  streams: {
    path: "/api/manifold/streams",
    columns: [
      { key: "name", label: "Name" },
      { key: "vhost", label: "VHost", hidePhone: true },
      { key: "messages", label: "Messages", num: true, format: formatNumber },
      { key: "message_bytes", label: "Size", num: true, format: formatBytes },
      { key: "first_offset", label: "First", num: true, hidePhone: true },
      { key: "last_offset", label: "Last", num: true, hidePhone: true },
      { key: "readers", label: "Readers", num: true },
    ],
    key: (r) => `${r.vhost}/${r.name}`,
  },
};

function setStatus(kind, text) {
  const el = $("status");
  el.className = `status status-${kind}`;
  el.textContent = text;
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("signout").hidden = true;
  $("who").textContent = "";
  setStatus("wait", "signed out");
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
}

function showUnreachable(detail) {
  $("unreachable").hidden = false;
  $("unreachable-detail").textContent = `The management API does not answer (${detail}).`;
  $("last-seen").textContent = state.lastSeen ? state.lastSeen.toLocaleTimeString() : "never";
  setStatus("bad", "broker unreachable");
}

function render() {
  const spec = TABS[state.tab];
  const { shown, total } = table.render(spec.columns, state.rows, {
    filter: $("search").value, key: spec.key, actions: actionsFor(state.tab, refresh),
  });
  $("count").textContent = shown === total ? `${total} shown` : `${shown} of ${total} shown`;
  $("empty").hidden = total !== 0;
  $("declare-queue").hidden = state.tab !== "queues";
}

function renderOverview(o) {
  const q = o.queue_totals, m = o.message_stats, t = o.object_totals;
  $("card-messages").textContent = formatNumber(q.messages);
  $("card-ready").textContent = formatNumber(q.messages_ready);
  $("card-unacked").textContent = formatNumber(q.messages_unacknowledged);
  $("card-publish").textContent = rate(m.publish_details.rate);
  $("card-deliver").textContent = rate(m.deliver_get_details.rate);
  $("card-ack").textContent = rate(m.ack_details.rate);
  $("card-memory").textContent = formatBytes(o.memory.used);
  $("card-bodies").textContent = formatBytes(o.memory.message_bodies);
  $("card-alarm").textContent = o.memory.alarm ? "MEMORY ALARM" : "no alarm";
  $("card-connections").textContent = formatNumber(t.connections);
  $("card-queues").textContent = formatNumber(t.queues);
  $("card-consumers").textContent = formatNumber(t.consumers);
}

export async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const [overview, history, rows] = await Promise.all([
      call("GET", "/api/overview"), call("GET", "/api/manifold/history"), call("GET", TABS[state.tab].path)]);
    state.lastSeen = new Date();
    $("unreachable").hidden = true;
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = userName();
    setStatus("ok", `live · ${state.lastSeen.toLocaleTimeString()}`);
    renderOverview(overview);
    for (const chart of Object.values(charts)) chart.update(history.samples);
    state.rows = rows;
    render();
  } catch (err) {
    if (err instanceof Unauthorized) {
      signOut();
      showLogin(err.message);
    } else if (err instanceof Unreachable) {
      showUnreachable(err.message);
    } else if (err instanceof ApiError) {
      setStatus("bad", `error ${err.status}: ${err.message}`);
    } else {
      setStatus("bad", String(err));
    }
  } finally {
    state.busy = false;
  }
}

function startPolling() {
  clearInterval(state.timer);
  state.timer = setInterval(refresh, POLL_MS);
  return refresh();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  signIn($("login-user").value, $("login-password").value);
  await startPolling();
});
$("signout").addEventListener("click", () => { signOut(); clearInterval(state.timer); showLogin(""); });
$("search").addEventListener("input", render);
$("declare-queue").addEventListener("click", () => declareQueue(refresh));
for (const tab of document.querySelectorAll(".tabs button")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tabs button")) other.setAttribute("aria-selected", "false");
    tab.setAttribute("aria-selected", "true");
    state.tab = tab.dataset.tab;
    state.rows = [];
    table.sort = null;
    render();
    refresh();
  });
}
window.addEventListener("resize", () => { for (const c of Object.values(charts)) c.resize(); });

if (credentials()) {
  startPolling();
} else {
  // Not signed in yet: still tell "unreachable" apart from "please sign in".
  call("GET", "/api/manifold/ping").then(() => showLogin(""), (err) => {
    showLogin("");
    if (err instanceof Unreachable) showUnreachable(err.message);
  });
}
