// Row actions, each behind a confirmation dialog: purge, delete, publish, get, close.
import { call, vh } from "./api.js";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function field(label, input) { return el("label", {}, label, input); }

export function toast(message) {
  const t = $("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
}

// Opens the dialog; ``run`` is awaited on OK: it may return a node to show (the dialog stays
// open with it), or nothing (the dialog closes). An error is shown in the dialog.
export function dialog({ title, body = [], ok = "OK", danger = false, run }) {
  const d = $("dialog");
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...body);
  $("dialog-error").hidden = true;
  const okButton = $("dialog-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "";
  okButton.hidden = false;
  okButton.onclick = async (event) => {
    event.preventDefault();
    okButton.disabled = true;
    try {
      const shown = await run();
      if (shown) {
        $("dialog-body").replaceChildren(shown);
        okButton.hidden = true;
        $("dialog-cancel").textContent = "Close";
      } else {
        d.close();
      }
    } catch (err) {
      $("dialog-error").textContent = err.message || String(err);
      $("dialog-error").hidden = false;
    } finally {
      okButton.disabled = false;
    }
  };
  $("dialog-cancel").textContent = "Cancel";
  d.showModal();
}

function queuePath(row) { return `/api/queues/${vh(row.vhost)}/${encodeURIComponent(row.name)}`; }

function publishDialog(vhost, exchange, routingKey, refresh) {
  const key = el("input", { id: "publish-routing-key", value: routingKey });
  const payload = el("textarea", { id: "publish-payload" });
  payload.value = "hello from the dashboard";
  const contentType = el("input", { id: "publish-content-type", value: "text/plain" });
  dialog({
    title: `Publish to ${exchange || "the default exchange"}`,
    body: [field("Routing key", key), field("Payload", payload), field("Content type", contentType)],
    ok: "Publish",
    run: async () => {
      const result = await call("POST", `/api/exchanges/${vh(vhost)}/${encodeURIComponent(exchange || "amq.default")}/publish`, {
        routing_key: key.value, payload: payload.value, payload_encoding: "string",
        properties: contentType.value ? { content_type: contentType.value } : {} });
      toast(result.routed ? "Message published" : "Published, but no queue took it (unroutable)");
      refresh();
    },
  });
}

function getDialog(row, refresh) {
  const count = el("input", { id: "get-count", type: "number", min: "1", value: "1" });
  const mode = el("select", { id: "get-ackmode" },
    el("option", { value: "ack_requeue_true", text: "Look only (requeue)" }),
    el("option", { value: "ack_requeue_false", text: "Take them off the queue (ack)" }));
  dialog({
    title: `Get messages from ${row.name}`,
    body: [field("How many", count), field("Mode", mode)],
    ok: "Get",
    run: async () => {
      const messages = await call("POST", `${queuePath(row)}/get`, {
        count: Number(count.value), ackmode: mode.value, encoding: "auto", truncate: 50000 });
      refresh();
      if (!messages.length) return el("p", { text: "The queue has no ready messages." });
      return el("div", {}, ...messages.map((m, i) => el("div", {},
        el("p", { text: `#${i + 1} · routing key ${m.routing_key || "(none)"} · ${m.payload_bytes} bytes` +
                        `${m.redelivered ? " · redelivered" : ""}` }),
        el("pre", { class: "payload", text: m.payload_encoding === "base64" ? `(base64) ${m.payload}` : m.payload }))));
    },
  });
}

function confirmDanger(title, text, ok, run) {
  dialog({ title, body: [el("p", { text })], ok, danger: true, run });
}

export function actionsFor(tab, refresh) {
  if (tab === "queues") {
    // Streams are logs: read by consumers at an offset, never fetched with get nor purged.
    return (row) => [
      ...(row.type === "stream" ? [] : [{ id: "get", label: "Get", run: () => getDialog(row, refresh) }]),
      { id: "publish", label: "Publish", run: () => publishDialog(row.vhost, "", row.name, refresh) },
      ...(row.type === "stream" ? [] : [{ id: "purge", label: "Purge", danger: true, run: () => confirmDanger(
          `Purge ${row.name}?`, `All ${row.messages_ready} ready messages of queue '${row.name}' will be deleted. ` +
          "Unacknowledged messages stay.", "Purge", async () => {
            await call("DELETE", `${queuePath(row)}/contents`); toast(`Queue ${row.name} purged`); refresh(); }) }]),
      { id: "delete", label: "Delete", danger: true, run: () => confirmDanger(
          `Delete ${row.name}?`, `Queue '${row.name}' and its ${row.messages} messages will be deleted; ` +
          `its ${row.consumers} consumers are cancelled.`, "Delete", async () => {
            await call("DELETE", queuePath(row)); toast(`Queue ${row.name} deleted`); refresh(); }) },
    ];
  }
  if (tab === "exchanges") {
    return (row) => {
      const actions = [{ id: "publish", label: "Publish", run: () => publishDialog(row.vhost, row.name, "", refresh) }];
      if (row.name && !row.name.startsWith("amq.")) {
        actions.push({ id: "delete", label: "Delete", danger: true, run: () => confirmDanger(
          `Delete exchange ${row.name}?`, `Exchange '${row.name}' and its bindings will be deleted.`, "Delete",
          async () => { await call("DELETE", `/api/exchanges/${vh(row.vhost)}/${encodeURIComponent(row.name)}`);
                        toast(`Exchange ${row.name} deleted`); refresh(); }) });
      }
      return actions;
    };
  }
  if (tab === "bindings") {
    return (row) => row.source ? [{ id: "delete", label: "Unbind", danger: true, run: () => confirmDanger(
      "Remove binding?", `${row.source} → ${row.destination} (${row.routing_key || "no key"})`, "Unbind",
      async () => {
        const kind = row.destination_type === "queue" ? "q" : "e";
        await call("DELETE", `/api/bindings/${vh(row.vhost)}/e/${encodeURIComponent(row.source)}/${kind}/` +
                             `${encodeURIComponent(row.destination)}/${encodeURIComponent(row.properties_key)}`);
        toast("Binding removed"); refresh(); }) }] : [];
  }
  if (tab === "connections") {
    // X-Reason goes into the protocol's close (AMQP 320 CONNECTION_FORCED reply text).
    return (row) => [{ id: "close", label: "Close", danger: true, run: () => {
      const reason = el("input", { id: "close-reason", value: "Closed from the Manifold dashboard" });
      dialog({ title: "Close connection?", ok: "Close", danger: true,
               body: [el("p", { text: `${row.protocol} connection ${row.name} of user ${row.user}` }),
                      field("Reason sent to the client", reason)],
               run: async () => {
                 await call("DELETE", `/api/connections/${encodeURIComponent(row.name)}`, undefined,
                            { "X-Reason": reason.value }); toast("Connection closed"); refresh(); } });
    } }];
  }
  return null;
}

export function declareQueue(refresh) {
  const name = el("input", { id: "declare-name", required: "" });
  const vhost = el("input", { id: "declare-vhost", value: "/" });
  const durable = el("select", { id: "declare-durable" },
    el("option", { value: "true", text: "durable" }), el("option", { value: "false", text: "transient" }));
  dialog({
    title: "Declare a queue", body: [field("Name", name), field("Virtual host", vhost), field("Durability", durable)],
    ok: "Declare",
    run: async () => {
      if (!name.value) throw new Error("a name is needed");
      await call("PUT", `/api/queues/${vh(vhost.value)}/${encodeURIComponent(name.value)}`,
                 { durable: durable.value === "true", auto_delete: false, arguments: {} });
      toast(`Queue ${name.value} declared`); refresh();
    },
  });
}
