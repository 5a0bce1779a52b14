// The HTTP API: fetch with the bearer token, errors as ApiError carrying the
// server's {"error": {"code", "message", "field"}}.

export class ApiError extends Error {
  constructor(status, code, message, field = null, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.body = body;
  }

  /** True when the route itself does not exist (an endpoint not deployed here). */
  get missingRoute() {
    return this.status === 404 && this.code === "not_found" && this.field == null;
  }
}

export function createApi({ token, onUnauthorized }) {
  async function request(method, path, { params, json, form, headers = {} } = {}) {
    let url = path;
    if (params) {
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) {
        if (v !== undefined && v !== null && v !== "") query.set(k, v);
      }
      const qs = query.toString();
      if (qs) url += `?${qs}`;
    }
    const init = { method, headers: { Accept: "application/json", ...headers } };
    const bearer = token();
    if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.headers["Content-Type"] = "application/x-www-form-urlencoded";
      init.body = new URLSearchParams(form).toString();
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    const text = await response.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch { body = null; }
    }
    if (!response.ok) {
      const e = (body && body.error) || {};
      const error = new ApiError(response.status, e.code || "http_error",
        e.message || `${response.status} ${response.statusText}`, e.field ?? null, body);
      if (response.status === 401 && bearer && onUnauthorized) onUnauthorized(error);
      throw error;
    }
    return body;
  }

  return {
    get: (path, params) => request("GET", path, { params }),
    post: (path, json, headers) => request("POST", path, { json, headers }),
    postForm: (path, form) => request("POST", path, { form }),
    del: (path) => request("DELETE", path),
  };
}
