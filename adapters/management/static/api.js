// The management API as the page uses it: basic credentials kept in this tab's sessionStorage,
// every call time-boxed, failures sorted into "unreachable", "not signed in" and API errors.
const KEY = "manifold.credentials";
const TIMEOUT_MS = 8000;

export class Unreachable extends Error {}
export class Unauthorized extends Error {}
export class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

export function credentials() { return sessionStorage.getItem(KEY); }
export function signIn(user, password) { sessionStorage.setItem(KEY, btoa(`${user}:${password}`)); }
export function signOut() { sessionStorage.removeItem(KEY); }
export function userName() {
  const c = credentials();
  return c ? atob(c).split(":")[0] : "";
}

export const vh = (vhost) => encodeURIComponent(vhost);

export async function call(method, path, body, extraHeaders = {}) {
  const headers = { "Accept": "application/json", ...extraHeaders };
  const creds = credentials();
  if (creds) headers["Authorization"] = `Basic ${creds}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                               signal: AbortSignal.timeout(TIMEOUT_MS), cache: "no-store" });
  } catch (err) {
    throw new Unreachable(err.name === "TimeoutError" ? "no answer within 8 s" : "connection refused or lost");
  }
  if (resp.status === 502 || resp.status === 504) throw new Unreachable(`HTTP ${resp.status} from a proxy`);
  if (resp.status === 401) throw new Unauthorized(await reason(resp));
  if (!resp.ok) throw new ApiError(resp.status, await reason(resp));
  if (resp.status === 204 || resp.status === 201) return null;
  return resp.json();
}

async function reason(resp) {
  try { const body = await resp.json(); return body.reason || body.error || resp.statusText; }
  catch { return resp.statusText; }
}
