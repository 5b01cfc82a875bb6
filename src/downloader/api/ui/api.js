// The API's client: the key this tab keeps in session storage goes with every request, and a
// refusal comes back as an error whose message is the API's own.

const KEY = "downloader.apiKey";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export function authHeaders(extra = {}) {
  const key = session.key;
  return key === null ? { ...extra } : { ...extra, "X-API-Key": key };
}

// The text of a refusal: FastAPI's `detail` (a string, or a list of validation errors).
export async function detail(response) {
  const text = await response.text();
  try {
    const found = JSON.parse(text).detail;
    if (typeof found === "string") return found;
    if (Array.isArray(found)) {
      return found
        .map((error) => {
          const where = (error.loc || []).filter((part) => part !== "body").join(".");
          return where ? `${where}: ${error.msg}` : error.msg;
        })
        .join("; ");
    }
  } catch {
    // not JSON: the text itself
  }
  return text.slice(0, 300) || response.statusText;
}

export async function call(method, path, body) {
  const init = { method, cache: "no-store", headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, `the API did not answer (${error.message})`);
  }
  if (response.status === 401) throw new Unauthorized(await detail(response));
  if (!response.ok) {
    throw new ApiError(response.status, `${response.status} ${await detail(response)}`);
  }
  return response.json();
}

export const queuePath = (queue) => `/api/v1/queue/${encodeURIComponent(queue)}`;
