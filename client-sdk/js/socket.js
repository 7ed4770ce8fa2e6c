// Aula browser SDK: the signaling WebSocket and where it reconnects. `SignalingSocket` holds the
// Room's newest WebSocket (events of a replaced one are ignored) and tells a socket that never
// opened (its node unreachable) from one that closed; `ReconnectTargets` orders the nodes a
// resume or rejoin tries; `rejoinDelay` and the windows below are the reconnect timing. What a
// close leads to (resume, rejoin, the end) is the Room's (room.js).
//
// Part of the SDK whose entry point is aula.js; see "Reconnecting" in its header.

/**
 * How long a dropped connection is resumed: the server keeps a dropped participant for its
 * `[room] reconnect_timeout_secs`, 15 s by default, and refuses a resume after that (the
 * session is then joined again, see REJOIN_WINDOW_MS).
 */
export const RESUME_WINDOW_MS = 15_000;

/**
 * How long a lost session is joined again before the Room gives up: a minute offline (a train
 * tunnel, a lift) is survived. Counted from when rejoining starts. The server keeps a lost
 * participant's stage and raised hand for two minutes (`REMEMBERED_FOR` in
 * signaling/src/rejoin.rs), which covers this window, its last attempt and the resume window.
 */
export const REJOIN_WINDOW_MS = 60_000;

/** Delays between rejoin attempts: the first at once, then from 0.5 s doubling up to 5 s. */
const FIRST_REJOIN_DELAY_MS = 500;
const MAX_REJOIN_DELAY_MS = 5_000;

/** How long one rejoin attempt may take (the WebSocket handshake and `joined`). */
export const REJOIN_ATTEMPT_TIMEOUT_MS = 10_000;

/**
 * How long a WebSocket of a resume or rejoin attempt may take to open; past that its node
 * counts as unreachable, and the next attempt goes to another (see `ReconnectTargets`).
 */
const CONNECT_TIMEOUT_MS = 5_000;

/** The delay before rejoin attempt `attempt` (0-based), in ms. */
export function rejoinDelay(attempt) {
  if (attempt === 0) return 0;
  return Math.min(MAX_REJOIN_DELAY_MS, FIRST_REJOIN_DELAY_MS * 2 ** Math.min(attempt - 1, 16));
}

/** Turns `http(s)://host[/...]` into `ws(s)://host/ws`; a ws(s) URL is used as given. */
export function websocketUrl(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'ws:' || u.protocol === 'wss:') return u.href;
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = '/ws';
  u.search = '';
  return u.href;
}

/**
 * Where a Room reconnects, in the order it tries them when its node cannot be reached: the node
 * it is on (or last reached), the alternates that node named (see "Reconnecting" in the
 * aula.js's header), then the URL given to `connect`; each once.
 * @internal exported for tests
 */
export class ReconnectTargets {
  #current;
  #alternates = [];
  #original;
  #at = 0;

  constructor(url) {
    this.#current = url;
    this.#original = url;
  }

  /** The server's latest alternates (each list replaces the last), reached like the URL given to `connect`. */
  setAlternates(urls) {
    this.#alternates = [];
    for (const url of urls) {
      try {
        this.#alternates.push(adaptUrl(url, this.#original));
      } catch {
        // Not a URL: skipped.
      }
    }
    this.#at = 0;
  }

  #order() {
    return [...new Set([this.#current, ...this.#alternates, this.#original])];
  }

  /** Where the next attempt goes. */
  url() {
    const order = this.#order();
    return order[this.#at % order.length];
  }

  /** The last attempt could not open a WebSocket: the next goes to the next URL. */
  unreachable() {
    this.#at = (this.#at + 1) % this.#order().length;
  }

  /** The node at `url` answered: it is where the Room is now. */
  reached(url) {
    this.#current = url;
    this.#at = 0;
  }
}

/**
 * An alternate `url` (`ws://host:port/ws`, as the server names it) reached like `like`, the URL
 * given to `connect`: over `wss` if that is (a page on https may not open `ws`, and the nodes'
 * TLS front end is not the server's to know), with its query if the alternate has none.
 */
function adaptUrl(url, like) {
  const u = new URL(url);
  const l = new URL(like);
  if (l.protocol === 'wss:' && u.protocol === 'ws:') u.protocol = 'wss:';
  if (!u.search && l.search) u.search = l.search;
  return u.href;
}

/**
 * The Room's WebSocket: the newest one opened, to where the next attempt goes (see
 * ReconnectTargets). Messages and closes of a replaced socket are ignored.
 */
export class SignalingSocket {
  #ws = null;
  /** Where to connect, resume and join again. */
  #targets;
  /** The URL of the newest WebSocket. */
  #url;
  /** WebSockets that opened: one closed before opening could not reach its node. */
  #opened = new WeakSet();
  #onMessage;
  #onClose;

  /**
   * @param {string} url the WebSocket URL given to `connect`
   * @param {(text: string) => void} onMessage a message of the newest socket
   * @param {(e: CloseEvent, unreachable: boolean) => void} onClose the newest socket closed;
   *   `unreachable` if it never opened
   */
  constructor(url, onMessage, onClose) {
    this.#targets = new ReconnectTargets(url);
    this.#onMessage = onMessage;
    this.#onClose = onClose;
  }

  /** The URL of the newest WebSocket. */
  get url() {
    return this.#url;
  }

  /**
   * Opens a new WebSocket to where the next attempt goes, sending `first` once open; when
   * `reconnecting`, one that does not open within CONNECT_TIMEOUT_MS is closed (its node counts
   * as unreachable).
   */
  open(first, reconnecting) {
    this.#url = this.#targets.url();
    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    this.#attach(ws, first);
    if (reconnecting) {
      setTimeout(() => {
        if (ws.readyState === WebSocket.CONNECTING) ws.close();
      }, CONNECT_TIMEOUT_MS);
    }
    return ws;
  }

  /** Wires a WebSocket that sends `first` once open; events of a replaced socket are ignored. */
  #attach(ws, first) {
    ws.addEventListener('open', () => {
      this.#opened.add(ws);
      ws.send(JSON.stringify(first));
    });
    ws.addEventListener('message', (e) => {
      if (ws === this.#ws) this.#onMessage(e.data);
    });
    ws.addEventListener('close', (e) => {
      if (ws === this.#ws) this.#onClose(e, !this.#opened.has(ws));
    });
  }

  /** Sends `msg` as JSON if the newest socket is open; dropped otherwise. */
  send(msg) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  /** Closes the newest socket unless it is already closing or closed. */
  close(...args) {
    if (this.#ws && this.#ws.readyState <= WebSocket.OPEN) this.#ws.close(...args);
  }

  /** The newest socket's node answered: it is where the Room is now. */
  reached() {
    this.#targets.reached(this.#url);
  }

  /** The last attempt could not open a WebSocket: the next goes to the next URL. */
  unreachable() {
    this.#targets.unreachable();
  }

  /** The server's latest alternates (see ReconnectTargets). */
  setAlternates(urls) {
    this.#targets.setAlternates(urls);
  }
}
