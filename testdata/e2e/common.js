// Shared by the e2e pages. The page is served from another origin than
// tileproxy: ?proxy=<tileproxy base URL>, #token=<JWT> (optional).
"use strict";
const PROXY = new URLSearchParams(location.search).get("proxy");
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");
const TILESET = "demo";
const TILE_URL = `${PROXY}/tiles/${TILESET}/{z}/{x}/{y}.png`;
// Start and "away" views: zoom 2 on the equator, zoom 3 far east.
const HOME = { lon: 0, lat: 0, zoom: 2 };
const AWAY = { lon: 120, lat: 60, zoom: 3 };

function setStatus(s) {
  document.getElementById("status").textContent = s;
  document.body.dataset.status = s;
}

// A tile failed to load: find out why (the <img> error hides the status)
// and say it on the page, so a missing session is never a silent blank.
let reported = false;
async function reportTileError(url) {
  if (reported) return;
  reported = true;
  let code = "network";
  try { code = (await fetch(url || `${PROXY}/tiles/${TILESET}/0/0/0.png`, { credentials: "include" })).status; } catch (e) {}
  setStatus(`error: tiles ${code}`);
}

// Trade the token for tileproxy's HttpOnly cookie (a cross-origin,
// credentialed POST: CORS must allow this page's origin).
async function openSession() {
  if (!TOKEN) return;
  try {
    const r = await fetch(`${PROXY}/auth/session`, { method: "POST", headers: { Authorization: "Bearer " + TOKEN }, credentials: "include" });
    if (r.status !== 204) throw new Error(String(r.status));
  } catch (e) {
    setStatus(`error: session ${e.message}`);
    throw e;
  }
}

function withTimeout(p, ms) {
  return Promise.race([p, new Promise((res) => setTimeout(res, ms))]);
}
