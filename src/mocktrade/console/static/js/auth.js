// Sign in (OAuth2 password form to /v1/auth/token), sign up when the server
// allows it, and the token: kept in sessionStorage (this tab only), never in
// a URL; signing out clears it.
import { $ } from "./dom.js";

const KEY = "mocktrade.token";

export const session = {
  token: () => sessionStorage.getItem(KEY),
  save: (token) => sessionStorage.setItem(KEY, token),
  clear: () => sessionStorage.removeItem(KEY),
};

/** The user a bearer token names (its JWT subject), or null when expired or unreadable. */
export function userOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - payload.length % 4) % 4), "=")));
    if (claims.exp && claims.exp * 1000 < Date.now()) return null;
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}

function fail(form, error) {
  const message = $(".form-message", form);
  message.textContent = error.message;
  message.className = "form-message error";
  const fields = { username: "[name=username]", password: "[name=password]", cash: "[name=cash]" };
  const input = error.field && fields[error.field] && $(fields[error.field], form);
  (input || $("input", form)).focus();
}

export async function showSignIn(root, api, onSignedIn) {
  root.hidden = false;
  const signin = $("#signin-form", root);
  const signup = $("#signup-form", root);
  $("input[name=username]", signin).focus();

  signin.onsubmit = async (e) => {
    e.preventDefault();
    const data = new FormData(signin);
    try {
      const answer = await api.postForm("/v1/auth/token", {
        grant_type: "password", username: data.get("username"), password: data.get("password"),
      });
      session.save(answer.access_token);
      onSignedIn(answer.access_token);
    } catch (error) {
      fail(signin, error.status === 404 ? new Error("Sign-in is not available on this server.") : error);
    }
  };

  let options = { signup: false };
  try {
    options = await api.get("/v1/auth/options");
  } catch {
    // No options endpoint: no sign-up.
  }
  if (!options.signup) return;
  signup.hidden = false;
  const cash = $("input[name=cash]", signup);
  if (options.maxStartingCash) {
    cash.placeholder = options.defaultStartingCash || options.maxStartingCash;
    $("#signup-cash-hint", signup).textContent = `Up to ${options.maxStartingCash}.`;
  }
  signup.onsubmit = async (e) => {
    e.preventDefault();
    const data = new FormData(signup);
    const body = { username: data.get("username"), password: data.get("password") };
    if (data.get("cash")) body.cash = data.get("cash");
    try {
      await api.post("/v1/accounts", body);
      const answer = await api.postForm("/v1/auth/token", {
        grant_type: "password", username: body.username, password: body.password,
      });
      session.save(answer.access_token);
      onSignedIn(answer.access_token);
    } catch (error) {
      fail(signup, error);
    }
  };
}
