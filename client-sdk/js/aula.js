// Aula browser SDK: join a room, publish camera / microphone / screen, receive everyone else.
//
// A plain ES module with no dependencies and no build step; the server serves it at /sdk/aula.js.
//
//   import * as Aula from '/sdk/aula.js';
//   const room = await Aula.connect(location.origin, token);
//   room.addEventListener('trackSubscribed', (e) => attach(e.detail.track, e.detail.info));
//   await room.publish({ camera: true, microphone: true });
//
// Protocol (see signaling/protocol/src/lib.rs): JSON messages tagged by "type" over one WebSocket,
// and two RTCPeerConnections. On the *publisher* connection this client offers and the server
// answers; on the *subscriber* connection the server offers and this client answers. Each side
// only ever offers on its own connection, so there is no glare to resolve; what remains is to
// run each connection's negotiations one at a time and in order, which `Serial` does.
//
// Events (all `CustomEvent`s, payload in `event.detail`):
//   participantJoined   {participant}
//   participantLeft     {participant}
//   trackPublished      {info, participant}          a remote track was announced (not yet flowing)
//   trackSubscribed     {track, stream, info, participant}  a remote track arrived
//   trackUnsubscribed   {track, info, participant}   a remote track went away
//   trackUnpublished    {info, participant}          a remote track was unpublished (after its trackUnsubscribed, if any)
//   trackMuted          {info, participant, muted}   a remote publisher (un)muted
//   localTrackPublished {source, track, info}        the server accepted one of our tracks
//   localTrackMuted     {source, muted}              a moderator muted one of our tracks (it is disabled here too;
//                                                    `setMuted(source, false)` unmutes it)
//   localTrackUnpublished {source, code, message}   after a rejoin, the server refused one of our tracks (e.g.
//                                                    'forbidden': the new participant is not on stage); it is stopped
//   connectionState     {target, state}              'publish' | 'subscribe', RTCPeerConnectionState
//   error               {code, message}              an error the server sent that no call awaited
//   reconnecting        {reason}                     the connection dropped (resuming; media keeps flowing) or the
//                                                    session was lost (joining again); once per outage, until one of:
//   reconnected         {}                           resumed: same participant, tracks and subscriptions
//   rejoined            {participant, previousSid}   joined again as a new participant (see "Reconnecting" below)
//   serverEvent         {type, ...}                  moderation, chat, support, recording, participant_state
//                                                    (another participant reconnecting / back) and stream_state (a
//                                                    video paused for our weak connection / resumed) messages, as sent
//   disconnected        {reason}                     the session is over; the Room is unusable
//
// Reconnecting: a dropped WebSocket is resumed (same participant) for RESUME_WINDOW_MS, the
// server's default reconnect window. When the session itself is lost (the server ended it with
// 'peer connection failed': its media path failed, or in a cluster the node serving its media
// died; or the resume was refused or did not succeed in its window), the Room joins again by
// itself with the same token (so the same identity): at once, then after 0.5 s doubling up to
// 5 s between attempts, for REJOIN_WINDOW_MS; a refusal that cannot change (an expired token,
// a locked room) ends it. `room.autoRejoin = false` (or `connect(url, token, {rejoin: false})`)
// ends the session instead. A rejoined Room is a **new participant**: `localParticipant` (a new
// sid), `permissions`, `locked` and `participants` are the new session's, every remote track
// went (`trackUnsubscribed`) and comes back on new connections (`trackSubscribed`, same track
// sids), and our tracks are published again by themselves as new tracks (`localTrackPublished`),
// muted if they were. The server gives the new participant back what a moderator gave the old
// one (the stage, with its publish permissions; a raised hand, at its place in the queue) when
// the old one was lost less than two minutes before, unless a moderator changed it meanwhile or
// locked the room: `permissions` and `localParticipant.hand_raised` already say so at
// 'rejoined' (a `permissions_changed` and a `hand_queue` follow). The page sees 'reconnecting',
// then 'rejoined' (rebuild what shows the room from `participants`) or 'disconnected'.
//
// In a cluster the server names other nodes this client may use if its own dies (an
// `alternates` message, kept in `room.alternates`, also passed on as a 'serverEvent'). When the
// node cannot be reached at all while resuming or joining again (its WebSocket is refused, or
// does not open within CONNECT_TIMEOUT_MS), the next attempt goes to the next of them, then to
// the URL given to `connect`; a node that answers is kept. Same delays, windows and events as
// above: a learner whose node was killed is joined again on another node by itself, with its
// token. A page on `https` keeps `wss` for them.
//
// Participants already in the room when `connect` resolves are in `room.participants`; their
// tracks arrive as `trackSubscribed` events, which cannot fire before the caller has had a chance
// to add listeners right after `await connect(...)`.
//
// Rendered sizes: the server forwards each remote video at no larger a simulcast layer than it is
// shown, and not at all while it is not shown. Nothing to call: show a track by setting a
// `<video>` element's `srcObject` to a MediaStream holding it (the event's `stream`, or a new
// MediaStream of its `track`), with the element in the document. The SDK notices (the element's
// `loadstart` / `emptied` events), watches the element's size and visibility, and sends
// `track_settings` with clientWidth x clientHeight x devicePixelRatio, the largest over the
// elements showing that track, or 0x0 when none is shown (display:none, scrolled far away,
// removed, srcObject cleared, or the tab hidden). Sent 300 ms after the last change, and only
// when the size differs from the last one sent. A track never shown in a <video> element is not
// reported, so a page that uses a track otherwise (canvas, recorder) still gets it unlimited.
//
// Recording: `room.recording` is the room's last `recording` event ({state: 'recording' | 'failed' |
// 'stopped', recording_id, started_by}), or null; the event itself reaches the page as a
// 'serverEvent' (also right after joining a room already being recorded). While the room is
// recorded, the SDK sends `client_stats` every 5 s by itself: what this browser received over
// the last 5 s, from the subscribe connection's getStats() (frames decoded per second, averaged
// over the videos that received packets; freezes and their duration; the largest decoded frame;
// the share of audio concealed; packet loss; the selected candidate pair's RTT; the worst
// jitter), leaving out what it cannot know (no video received: no fps). The server writes it
// into the recording's QoS timeline and ignores it at any other time, so it is sent only while
// recording: 100 students would otherwise send it for nothing all class long.

/**
 * How long a dropped connection is resumed: the server keeps a dropped participant for its
 * `[room] reconnect_timeout_secs`, 15 s by default, and refuses a resume after that (the
 * session is then joined again, see REJOIN_WINDOW_MS).
 */
const RESUME_WINDOW_MS = 15_000;

/**
 * How long a lost session is joined again before the Room gives up: a minute offline (a train
 * tunnel, a lift) is survived. Counted from when rejoining starts. The server keeps a lost
 * participant's stage and raised hand for two minutes (`REMEMBERED_FOR` in
 * signaling/src/rejoin.rs), which covers this window, its last attempt and the resume window.
 */
const REJOIN_WINDOW_MS = 60_000;

/** Delays between rejoin attempts: the first at once, then from 0.5 s doubling up to 5 s. */
const FIRST_REJOIN_DELAY_MS = 500;
const MAX_REJOIN_DELAY_MS = 5_000;

/** How long one rejoin attempt may take (the WebSocket handshake and `joined`). */
const REJOIN_ATTEMPT_TIMEOUT_MS = 10_000;

/**
 * How long a WebSocket of a resume or rejoin attempt may take to open; past that its node
 * counts as unreachable, and the next attempt goes to another (see `ReconnectTargets`).
 */
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * The server's `left` reason when it ended the session because its media path failed (the
 * protocol's LEFT_PEER_CONNECTION_FAILED): joined again, not given up.
 */
const REASON_PEER_FAILED = 'peer connection failed';

/** Refusals of a join that another attempt with the same token cannot change. */
const FINAL_JOIN_ERRORS = ['unauthorized', 'forbidden', 'room_locked', 'unsupported_version'];

/** Protocol version announced in `join`; the server refuses versions it does not speak. */
export const PROTOCOL_VERSION = 1;

/** How often the client pings. The server drops sessions that stay silent much longer. */
const PING_INTERVAL_MS = 10_000;

/**
 * Camera simulcast layers, lowest first. The server forwards one layer per subscriber and
 * switches with the subscriber's bandwidth, so a student on a weak link still gets a picture.
 * The bitrates follow what LiveKit and mediasoup use for 720p cameras.
 */
const CAMERA_SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * How long rendered sizes settle before `track_settings` goes out: a window drag or a layout
 * change sends one message per video, not one per animation frame.
 */
const RENDERED_SIZE_DEBOUNCE_MS = 300;

/**
 * A video this close to the viewport counts as shown, so that one scrolled into view has usually
 * been resumed already (the server needs a keyframe from the publisher to restart it).
 */
const IN_VIEW_MARGIN = '200px';

/** The protocol's MAX_RENDERED_DIMENSION: larger sizes are refused, so they are capped here. */
const MAX_RENDERED_DIMENSION = 16384;

/**
 * How often `client_stats` goes out while the room is recorded: the protocol's
 * CLIENT_STATS_INTERVAL_SECS (the server refuses more than about one every 4 s).
 */
const CLIENT_STATS_INTERVAL_MS = 5_000;

/** Camera capture when `publish({camera: true})`: 720p is what the `f` layer is sized for. */
const DEFAULT_CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/** An error the server reported (`code` is the protocol's ErrorCode, e.g. 'forbidden'). */
export class AulaError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'AulaError';
    this.code = code;
  }
}

/**
 * Joins a room.
 * @param {string} url server base (`https://host`, `http://host:7880`) or WebSocket URL (`wss://host/ws`)
 * @param {string} token access token naming the room, identity and role
 * @param {{iceServers?: RTCIceServer[], rejoin?: boolean}} [options] `rejoin: false` ends a
 *   lost session instead of joining again (see "Reconnecting" in the header)
 * @returns {Promise<Room>} resolves once the server answered `joined`
 */
export async function connect(url, token, options = {}) {
  const room = new Room(websocketUrl(url), options);
  await room._join(token);
  return room;
}

/** The delay before rejoin attempt `attempt` (0-based), in ms. */
export function rejoinDelay(attempt) {
  if (attempt === 0) return 0;
  return Math.min(MAX_REJOIN_DELAY_MS, FIRST_REJOIN_DELAY_MS * 2 ** Math.min(attempt - 1, 16));
}

/** Turns `http(s)://host[/...]` into `ws(s)://host/ws`; a ws(s) URL is used as given. */
function websocketUrl(url) {
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
 * header), then the URL given to `connect`; each once.
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

/** Runs async tasks one after another, so negotiations on one connection never overlap. */
class Serial {
  #tail = Promise.resolve();

  /** Queues `task`; the returned promise settles with it. A failure does not block later tasks. */
  run(task) {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }
}

/**
 * One side of the media: an RTCPeerConnection plus the remote ICE candidates that arrived before
 * its remote description (the browser rejects candidates until then, and the server may trickle
 * its candidates right behind, or even ahead of, the SDP).
 */
class Peer {
  constructor(target, config, room) {
    this.target = target;
    this.pc = new RTCPeerConnection(config);
    this.serial = new Serial();
    this.pendingCandidates = [];
    this.room = room;
    // Our own candidates for the publish connection wait for the server's answer: the server
    // creates that connection only when it accepts the offer, and a refused offer (a student
    // without the grant) would otherwise have each candidate come back as 'bad_candidate'.
    this.unsentCandidates = target === 'publish' ? [] : null;
    this.pc.addEventListener('icecandidate', (e) => {
      // Chrome ends gathering with an empty candidate string; the protocol has no end-of-candidates.
      if (!e.candidate?.candidate) return;
      const message = { type: 'candidate', target, candidate: e.candidate.toJSON() };
      if (this.unsentCandidates) this.unsentCandidates.push(message);
      else room._send(message);
    });
    this.pc.addEventListener('connectionstatechange', () => {
      room._emit('connectionState', { target, state: this.pc.connectionState });
    });
  }

  async addCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate);
  }

  async setRemoteDescription(description) {
    await this.pc.setRemoteDescription(description);
    const unsent = this.unsentCandidates ?? [];
    this.unsentCandidates = null;
    for (const message of unsent) this.room._send(message);
    const pending = this.pendingCandidates.splice(0);
    for (const candidate of pending) await this.pc.addIceCandidate(candidate);
  }
}

/**
 * A joined session. Create it with {@link connect}.
 *
 * `room.publisher` and `room.subscriber` are the two RTCPeerConnections (`publisher` is null until
 * the first `publish`), exposed for `getStats()`.
 */
export class Room extends EventTarget {
  /** @type {object} our ParticipantInfo as the server sent it in `joined` */
  localParticipant = null;
  /** @type {string} */
  name = '';
  /** @type {object|null} our live permissions (from `joined`, then `permissions_changed`) */
  permissions = null;
  /** @type {boolean} whether the room refuses new joins other than staff (`joined`, then `room_locked`) */
  locked = false;
  /** @type {Map<string, object>} other participants by sid; each ParticipantInfo's `tracks` is kept current */
  participants = new Map();
  /**
   * Our tracks by source. `sid` is null until the server announces the track; `muted` is what
   * `setMuted` last set.
   * @type {Map<string, {track: MediaStreamTrack, transceiver: RTCRtpTransceiver, sid: string|null, muted?: boolean}>}
   */
  localTracks = new Map();
  /** @type {Map<string, {track: MediaStreamTrack, stream: MediaStream}>} received tracks by track sid */
  remoteTracks = new Map();
  /** @type {{state: string, recording_id: string, started_by: string}|null} the last `recording` event */
  recording = null;
  /** Whether a lost session is joined again by itself (see "Reconnecting" in the header). */
  autoRejoin = true;
  /** @type {string[]} the other nodes our node last named (see "Reconnecting" in the header) */
  alternates = [];

  #ws;
  #rtcConfig;
  #publisher = null;
  #subscriber;
  /** Resolvers of `_join`, waiting for `joined`. */
  #awaitingJoin = null;
  /** Resolvers of the one publish negotiation waiting for its `publish_answer`. */
  #awaitingAnswer = null;
  #pingTimer = null;
  #closed = false;
  /** `leave()` was called: the session ending now is not joined again. */
  #leaving = false;
  /** Where to connect, resume and join again (see ReconnectTargets). */
  #targets;
  /** The URL of the newest WebSocket. */
  #wsUrl;
  /** WebSockets that opened: one closed before opening could not reach its node. */
  #opened = new WeakSet();
  /** The access token, to join again with. */
  #token = null;
  /** Joining again is under way. */
  #rejoining = false;
  /** 'reconnecting' was emitted for the outage under way. */
  #reconnecting = false;
  /** From `joined`; null when the server does not keep dropped participants. */
  #resumeToken = null;
  /** When resuming gives up (ms since the epoch); null while connected. */
  #resumeDeadline = null;
  #resumeAttempts = 0;
  /** Reports how large remote videos are shown (see the header comment). */
  #renderedSizes;
  /** Sends `client_stats` while the room is recorded (see the header comment). */
  #clientStats;

  constructor(wsUrl, { iceServers = [], rejoin = true } = {}) {
    super();
    this.#targets = new ReconnectTargets(wsUrl);
    this.autoRejoin = rejoin;
    this.#renderedSizes = new RenderedSizes((msg) => this._send(msg), (stream) => this.#remoteVideoSid(stream));
    this.#clientStats = new ClientStats(() => this.subscriber, (msg) => this._send(msg));
    this.#rtcConfig = { iceServers, bundlePolicy: 'max-bundle' };
    this.#newSubscriber();
  }

  /** A new subscribe connection; made before joining so that a `subscribe_offer` right behind `joined` finds it. */
  #newSubscriber() {
    this.#subscriber = new Peer('subscribe', this.#rtcConfig, this);
    this.#subscriber.pc.addEventListener('track', (e) => this.#onRemoteTrack(e));
  }

  get publisher() {
    return this.#publisher?.pc ?? null;
  }

  get subscriber() {
    return this.#subscriber.pc;
  }

  /** Sends `join` and waits for `joined` (or an error / close, which rejects). */
  async _join(token) {
    this.#token = token;
    try {
      await this.#openJoin(token);
    } catch (err) {
      this.#shutdown(err.message);
      throw err;
    }
    this.#pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
  }

  /**
   * Opens a new WebSocket that sends `join`; resolves on `joined`, rejects with the server's
   * error (an AulaError) or when the socket closes first, or after `timeoutMs` if given.
   */
  #openJoin(token, timeoutMs = 0) {
    const ws = this.#open({ type: 'join', version: PROTOCOL_VERSION, token }, timeoutMs > 0);
    const joined = new Promise((resolve, reject) => {
      this.#awaitingJoin = { resolve, reject };
    });
    if (timeoutMs > 0) {
      // Closing makes #onClose reject the join.
      const timer = setTimeout(() => ws.close(), timeoutMs);
      joined.then(() => clearTimeout(timer), () => clearTimeout(timer));
    }
    return joined;
  }

  /**
   * Opens the Room's new WebSocket to where the next attempt goes (#targets), sending `first`
   * once open; when `reconnecting`, one that does not open within CONNECT_TIMEOUT_MS is closed
   * (its node counts as unreachable).
   */
  #open(first, reconnecting) {
    this.#wsUrl = this.#targets.url();
    const ws = new WebSocket(this.#wsUrl);
    this.#ws = ws;
    this.#attach(ws, first);
    if (reconnecting) {
      setTimeout(() => {
        if (ws.readyState === WebSocket.CONNECTING) ws.close();
      }, CONNECT_TIMEOUT_MS);
    }
    return ws;
  }

  /**
   * Publishes local media. Each option is `true` (capture with defaults), MediaTrackConstraints,
   * or a MediaStreamTrack you captured yourself. A source already published is left as it is.
   * Resolves when the server answered the offer; rejects with an AulaError (e.g. code
   * 'forbidden' for students), in which case nothing of this call stays published.
   * @param {{camera?: any, microphone?: any, screen?: any, simulcast?: boolean}} options
   *   `simulcast` (default true) sends the camera in three layers.
   */
  async publish({ camera, microphone, screen, simulcast = true } = {}) {
    if (this.#closed) throw new Error('the room is closed');
    const captured = [];
    try {
      if (camera && !this.localTracks.has('camera')) {
        captured.push(['camera', await captureTrack(camera, 'video', DEFAULT_CAMERA)]);
      }
      if (microphone && !this.localTracks.has('microphone')) {
        captured.push(['microphone', await captureTrack(microphone, 'audio', true)]);
      }
      if (screen && !this.localTracks.has('screen_share')) {
        const stream = await navigator.mediaDevices.getDisplayMedia(screen === true ? { video: true, audio: true } : screen);
        captured.push(['screen_share', stream.getVideoTracks()[0]]);
        const audio = stream.getAudioTracks()[0];
        if (audio) captured.push(['screen_share_audio', audio]);
      }
    } catch (err) {
      for (const [, track] of captured) track.stop();
      throw err;
    }
    if (captured.length === 0) return;

    this.#publisher ??= new Peer('publish', this.#rtcConfig, this);
    const stream = new MediaStream();
    for (const [source, track] of captured) {
      const layered = source === 'camera' && simulcast;
      if (source === 'screen_share') track.contentHint = 'detail';
      const transceiver = this.publisher.addTransceiver(track, sendInit(stream, layered));
      this.localTracks.set(source, { track, transceiver, sid: null, simulcast: layered });
      // The browser's "Stop sharing" button ends the screen track: take it out of the room too.
      if (source === 'screen_share') track.addEventListener('ended', () => this.unpublish('screen_share').catch(() => {}));
    }
    try {
      await this.#negotiatePublisher();
    } catch (err) {
      for (const [source] of captured) this.#dropLocal(source);
      // Refused before the server ever answered (a student without the grant): it has no
      // publish connection for us, so this one is dropped, or its trickled candidates would
      // each come back as a 'bad_candidate' error.
      if (this.#publisher && !this.#publisher.pc.remoteDescription) {
        this.#publisher.pc.close();
        this.#publisher = null;
      }
      throw err;
    }
  }

  /** Stops publishing `source` ('camera', 'microphone', 'screen_share', 'screen_share_audio'). */
  async unpublish(source) {
    if (!this.#dropLocal(source)) return;
    if (source === 'screen_share' && this.localTracks.has('screen_share_audio')) this.#dropLocal('screen_share_audio');
    await this.#negotiatePublisher();
  }

  /**
   * Mutes or unmutes one of our sources. The track keeps flowing disabled (black / silence, a few
   * bits per second), so unmuting is instant and needs no renegotiation; the server tells the
   * others with `track_muted`.
   */
  setMuted(source, muted) {
    const local = this.localTracks.get(source);
    if (!local) return;
    local.track.enabled = !muted;
    local.muted = muted;
    if (local.sid) this._send({ type: 'mute_track', track_sid: local.sid, muted });
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
      if (ws === this.#ws) this.#onClose(e, ws);
    });
  }

  /**
   * A closed socket of a joined session is resumed if the server gave a resume token: new
   * sockets send `resume` (at once, then every second) until the server answers `resumed`,
   * refuses, or RESUME_WINDOW_MS pass. Then, or without a resume token, the session is joined
   * again (or ended: `autoRejoin` off). A join whose socket closes before `joined` fails.
   * A socket that closes before it opened could not reach its node: the next attempt goes to
   * another (see ReconnectTargets).
   */
  #onClose(e, ws) {
    if (this.#closed) return;
    const unreachable = !this.#opened.has(ws);
    if (this.#awaitingJoin) {
      const waiting = this.#awaitingJoin;
      this.#awaitingJoin = null;
      const err = new Error(e.reason || `cannot reach ${this.#wsUrl}`);
      err.unreachable = unreachable;
      waiting.reject(err);
      return;
    }
    if (unreachable) this.#targets.unreachable();
    // The socket of the lost session, or of a refused attempt: #rejoin carries on.
    if (this.#rejoining) return;
    if (this.localParticipant && this.#resumeToken && !this.#leaving) {
      this.#resumeDeadline ??= Date.now() + RESUME_WINDOW_MS;
      if (Date.now() < this.#resumeDeadline) {
        if (this.#resumeAttempts === 0) this.#announceReconnecting(e.reason || `connection closed (${e.code})`);
        setTimeout(() => this.#reopen(), this.#resumeAttempts++ === 0 ? 0 : 1000);
        return;
      }
    }
    const reason = e.reason || `connection closed (${e.code})`;
    if (this.#mayRejoin()) {
      this.#rejoin(reason);
      return;
    }
    this.#shutdown(reason);
  }

  /** Says once per outage that we are reconnecting. */
  #announceReconnecting(reason) {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    this._emit('reconnecting', { reason });
  }

  #mayRejoin() {
    return this.autoRejoin && !this.#leaving && !this.#closed && this.localParticipant !== null && this.#token !== null;
  }

  /**
   * Joins the room again with our token as a new participant (see "Reconnecting" in the
   * header): at once, then with a growing delay, for REJOIN_WINDOW_MS.
   */
  async #rejoin(reason) {
    if (this.#rejoining) return;
    this.#rejoining = true;
    this.#resumeDeadline = null;
    this.#resumeAttempts = 0;
    this.#resumeToken = null;
    this.#announceReconnecting(reason);
    const previousSid = this.localParticipant.sid;
    this.#dropMedia(reason);
    if (this.#ws.readyState <= WebSocket.OPEN) this.#ws.close(1000, 'rejoining');
    this.#newSubscriber();
    const deadline = Date.now() + REJOIN_WINDOW_MS;
    for (let attempt = 0; ; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, rejoinDelay(attempt)));
      if (this.#closed) return;
      if (attempt > 0 && Date.now() >= deadline) break;
      try {
        await this.#openJoin(this.#token, REJOIN_ATTEMPT_TIMEOUT_MS);
      } catch (err) {
        if (this.#closed) return;
        if (err.unreachable) this.#targets.unreachable();
        if (this.#ws.readyState <= WebSocket.OPEN) this.#ws.close();
        if (FINAL_JOIN_ERRORS.includes(err.code)) {
          this.#rejoining = false;
          this.#shutdown(err.message);
          return;
        }
        continue;
      }
      if (this.#closed) return;
      this.#rejoining = false;
      this.#reconnecting = false;
      this._emit('rejoined', { participant: this.localParticipant, previousSid });
      this.#publishAgain();
      return;
    }
    this.#rejoining = false;
    this.#shutdown(reason);
  }

  /** The lost session's media goes: remote tracks, both connections; our tracks are kept to publish again. */
  #dropMedia(reason) {
    this.#awaitingAnswer?.reject(new Error(reason));
    this.#awaitingAnswer = null;
    for (const sid of [...this.remoteTracks.keys()]) this.#removeRemoteTrack(sid);
    this.#clientStats.stop();
    this.#publisher?.pc.close();
    this.#publisher = null;
    this.#subscriber.pc.close();
    for (const local of this.localTracks.values()) {
      local.sid = null;
      local.transceiver = null;
    }
  }

  /** Publishes our tracks again after a rejoin, on a new publish connection; refused ones are stopped. */
  async #publishAgain() {
    for (const [source, local] of [...this.localTracks]) {
      if (local.track.readyState !== 'live') this.localTracks.delete(source);
    }
    if (this.localTracks.size === 0) return;
    this.#publisher = new Peer('publish', this.#rtcConfig, this);
    const stream = new MediaStream();
    for (const local of this.localTracks.values()) {
      local.transceiver = this.publisher.addTransceiver(local.track, sendInit(stream, local.simulcast));
    }
    const sources = [...this.localTracks.keys()];
    try {
      await this.#negotiatePublisher();
    } catch (err) {
      // Lost again meanwhile: the next rejoin publishes them.
      if (this.#closed || this.#rejoining) return;
      for (const source of sources) this.#dropLocal(source);
      if (this.#publisher && !this.#publisher.pc.remoteDescription) {
        this.#publisher.pc.close();
        this.#publisher = null;
      }
      for (const source of sources) {
        this._emit('localTrackUnpublished', { source, code: err.code ?? 'publish_failed', message: err.message });
      }
    }
  }

  #reopen() {
    if (this.#closed) return;
    this.#open({ type: 'resume', version: PROTOCOL_VERSION, resume_token: this.#resumeToken }, true);
  }

  /** @internal For tests: drops the WebSocket as a network change would (media stays up). */
  _dropConnection() {
    this.#ws.close(4000, 'dropped for a test');
  }

  /** Leaves the room: tells the server, waits briefly for `left`, and releases all media. */
  async leave() {
    if (this.#closed) return;
    this.#leaving = true;
    const left = new Promise((resolve) => {
      this.addEventListener('disconnected', resolve, { once: true });
      setTimeout(resolve, 2000);
    });
    this._send({ type: 'leave' });
    await left;
    this.#shutdown('left');
  }

  /** Removes our track for `source` from the publisher connection; false if there was none. */
  #dropLocal(source) {
    const local = this.localTracks.get(source);
    if (!local) return false;
    this.localTracks.delete(source);
    local.track.stop();
    // The transceiver is made inactive, which tells the server the track is gone, rather than
    // stopped. Stopping rejects its m-line: once every m-line was rejected Chrome refused the
    // next offer ("max-bundle is used but no bundle group found"), and an m-line the browser
    // recycles for a later track was not picked up again by the server's WebRTC stack. Either
    // way a student taken off the stage could not publish again. Inactive m-lines stay in the
    // bundle; each later track gets a new one. (None while a lost session is joined again.)
    if (local.transceiver && this.publisher && this.publisher.signalingState !== 'closed') {
      local.transceiver.direction = 'inactive';
      local.transceiver.sender.replaceTrack(null).catch(() => {});
    }
    return true;
  }

  /**
   * Offers the publisher connection's current tracks to the server and applies its answer.
   * Queued: a call made while an exchange is in flight runs after it, with the tracks as they
   * are by then, so the server always ends up with the latest set.
   */
  #negotiatePublisher(iceRestart = false) {
    const peer = this.#publisher;
    // None while a lost session is joined again: what is in `localTracks` is published then.
    if (!peer) return Promise.resolve();
    return peer.serial.run(async () => {
      const offer = await peer.pc.createOffer({ iceRestart });
      await peer.pc.setLocalDescription(offer);
      const tracks = [...this.localTracks].map(([source, { track }]) => ({ track_id: track.id, source }));
      const answer = new Promise((resolve, reject) => {
        this.#awaitingAnswer = { resolve, reject };
      });
      this._send({ type: 'publish_offer', sdp: peer.pc.localDescription.sdp, tracks });
      try {
        await peer.setRemoteDescription({ type: 'answer', sdp: await answer });
      } catch (err) {
        // Back to the last agreed state, so the next negotiation starts clean.
        if (peer.pc.signalingState === 'have-local-offer') await peer.pc.setLocalDescription({ type: 'rollback' });
        throw err;
      }
    });
  }

  /** Answers one `subscribe_offer`; queued so that offers are answered in the order they came. */
  #answerSubscriber(sdp) {
    const peer = this.#subscriber;
    return peer.serial.run(async () => {
      await peer.setRemoteDescription({ type: 'offer', sdp });
      const answer = await peer.pc.createAnswer();
      await peer.pc.setLocalDescription(answer);
      this._send({ type: 'subscribe_answer', sdp: peer.pc.localDescription.sdp });
    });
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return this._emit('error', { code: 'bad_message', message: 'server sent invalid JSON' });
    }
    switch (msg.type) {
      case 'joined': {
        this.localParticipant = msg.participant;
        this.permissions = msg.permissions ?? null;
        this.#resumeToken = msg.resume_token ?? null;
        this.#targets.reached(this.#wsUrl);
        this.name = msg.room.name;
        this.locked = msg.room.locked ?? false;
        // Joined again: the room as it is now (see #rejoin).
        this.participants.clear();
        for (const p of msg.room.participants) this.participants.set(p.sid, p);
        const waiting = this.#awaitingJoin;
        this.#awaitingJoin = null;
        waiting?.resolve();
        break;
      }
      case 'participant_joined':
        this.participants.set(msg.participant.sid, msg.participant);
        this._emit('participantJoined', { participant: msg.participant });
        break;
      case 'participant_left': {
        const participant = this.participants.get(msg.participant_sid);
        if (!participant) break;
        for (const info of participant.tracks) this.#removeRemoteTrack(info.sid);
        this.participants.delete(msg.participant_sid);
        this._emit('participantLeft', { participant });
        break;
      }
      case 'track_published':
        this.#onTrackPublished(msg.track);
        break;
      case 'track_unpublished': {
        this.#removeRemoteTrack(msg.track_sid);
        // Only the server's word removes a track from a participant's list (see #removeRemoteTrack).
        const found = this.#findTrack(msg.track_sid);
        if (!found) break;
        found.participant.tracks = found.participant.tracks.filter((t) => t.sid !== msg.track_sid);
        this._emit('trackUnpublished', found);
        break;
      }
      case 'track_muted': {
        if (msg.participant_sid === this.localParticipant.sid) {
          this.#onLocalTrackMuted(msg.track_sid, msg.muted);
          break;
        }
        const found = this.#findTrack(msg.track_sid);
        if (!found) break;
        found.info.muted = msg.muted;
        this._emit('trackMuted', { ...found, muted: msg.muted });
        break;
      }
      case 'publish_answer': {
        const waiting = this.#awaitingAnswer;
        this.#awaitingAnswer = null;
        waiting?.resolve(msg.sdp);
        break;
      }
      case 'subscribe_offer': {
        const peer = this.#subscriber;
        this.#answerSubscriber(msg.sdp).catch((err) => {
          // A connection closed meanwhile (the session was lost) is no news.
          if (peer === this.#subscriber) this._emit('error', { code: 'subscribe_failed', message: String(err) });
        });
        break;
      }
      case 'candidate': {
        const peer = msg.target === 'publish' ? this.#publisher : this.#subscriber;
        peer?.addCandidate(msg.candidate).catch((err) => this._emit('error', { code: 'bad_candidate', message: String(err) }));
        break;
      }
      case 'pong':
        break;
      case 'left':
        if (msg.reason === REASON_PEER_FAILED && this.#mayRejoin()) this.#rejoin(msg.reason);
        else this.#shutdown(msg.reason);
        break;
      case 'error':
        this.#onError(msg.code, msg.message);
        break;
      case 'resumed':
        this.#targets.reached(this.#wsUrl);
        this.#resumeDeadline = null;
        this.#resumeAttempts = 0;
        this.#reconnecting = false;
        this._emit('reconnected', {});
        // Sizes sent while the socket was down were dropped.
        this.#renderedSizes.resendAll();
        // Our address may have changed: new ICE credentials for what we send (the server
        // restarts the subscribe side itself with a new offer).
        if (this.#publisher) {
          this.#negotiatePublisher(true).catch((err) => this._emit('error', { code: 'ice_restart_failed', message: String(err) }));
        }
        break;
      case 'alternates':
        this.alternates = msg.urls ?? [];
        this.#targets.setAlternates(this.alternates);
        this._emit('serverEvent', msg);
        break;
      case 'room_locked':
        this.locked = msg.locked;
        this._emit('serverEvent', msg);
        break;
      case 'permissions_changed':
        if (msg.participant_sid === this.localParticipant?.sid) this.permissions = msg.permissions;
        this._emit('serverEvent', msg);
        break;
      case 'recording':
        this.recording = { state: msg.state, recording_id: msg.recording_id, started_by: msg.started_by };
        if (msg.state === 'recording') this.#clientStats.start();
        else this.#clientStats.stop();
        this._emit('serverEvent', msg);
        break;
      default:
        // Moderation, chat and support events (hand_queue, chat, support_assigned, ...) go to
        // the page as 'serverEvent' with the message as detail; types this SDK does not know
        // yet arrive the same way, so old SDKs keep working with newer servers.
        this._emit('serverEvent', msg);
        break;
    }
  }

  /**
   * Routes a server error to whoever is waiting for it: the join, or the publish negotiation in
   * flight (the server refuses a student's offer with 'forbidden' instead of answering it).
   * Anything else becomes an 'error' event.
   */
  #onError(code, message) {
    const error = new AulaError(code, message);
    // The server refused our resume (expired; or a node that cannot reach the one that had
    // our session, which died): the close that follows ends the session, which is joined again
    // (as the Rust SDK does on any refusal of a resume).
    if (this.#resumeDeadline !== null) this.#resumeToken = null;
    if (this.#awaitingJoin) {
      const waiting = this.#awaitingJoin;
      this.#awaitingJoin = null;
      return waiting.reject(error);
    }
    if (this.#awaitingAnswer && ['forbidden', 'bad_sdp', 'track_mismatch', 'unsupported_codec', 'internal'].includes(code)) {
      const waiting = this.#awaitingAnswer;
      this.#awaitingAnswer = null;
      return waiting.reject(error);
    }
    this._emit('error', { code, message });
  }

  /** The server says one of our tracks is (un)muted: a moderator's mute, or our own echoed. */
  #onLocalTrackMuted(sid, muted) {
    const entry = [...this.localTracks].find(([, local]) => local.sid === sid);
    if (!entry) return;
    const [source, local] = entry;
    if (Boolean(local.muted) === muted) return; // our own setMuted, echoed
    local.track.enabled = !muted;
    local.muted = muted;
    this._emit('localTrackMuted', { source, muted });
  }

  #onTrackPublished(info) {
    if (info.participant_sid === this.localParticipant.sid) {
      const local = this.localTracks.get(info.source);
      if (!local) return;
      local.sid = info.sid;
      // A mute set before the server named the track is sent now.
      if (local.muted) this._send({ type: 'mute_track', track_sid: info.sid, muted: true });
      this._emit('localTrackPublished', { source: info.source, track: local.track, info });
      return;
    }
    const participant = this.participants.get(info.participant_sid);
    if (!participant) return;
    participant.tracks = participant.tracks.filter((t) => t.sid !== info.sid).concat(info);
    this._emit('trackPublished', { info, participant });
    // The media may have arrived before the announcement; now it can be named.
    const remote = this.remoteTracks.get(info.sid);
    if (remote) this._emit('trackSubscribed', { ...remote, info, participant });
  }

  #onRemoteTrack(event) {
    const stream = event.streams[0];
    if (!stream) return;
    const sid = stream.id;
    const remote = { track: event.track, stream };
    this.remoteTracks.set(sid, remote);
    // The server renegotiated the track away (its m-line went inactive): the track leaves its stream.
    stream.addEventListener('removetrack', (e) => this.#removeRemoteTrack(sid, e.track));
    const found = this.#findTrack(sid);
    if (found) this._emit('trackSubscribed', { ...remote, ...found });
  }

  /**
   * Forgets received media and tells listeners once, whichever signal (message or SDP) came first.
   * With `track`, only if that is still the media held for `sid`.
   *
   * It leaves `participant.tracks` alone: that list is what the server announced, and only
   * `track_unpublished` / `participant_left` change it. Media also goes when the track is still
   * published (the server stopped sending it to us, or our session ended); dropping the info
   * then made a still-published track vanish from `room.participants`, and media arriving for it
   * again could no longer be named.
   */
  #removeRemoteTrack(sid, track = null) {
    const remote = this.remoteTracks.get(sid);
    if (!remote || (track && remote.track !== track)) return;
    this.remoteTracks.delete(sid);
    // Before listeners detach it: a size for a track the server no longer sends us is refused.
    this.#renderedSizes.forget(sid);
    const found = this.#findTrack(sid);
    if (found) this._emit('trackUnsubscribed', { track: remote.track, ...found });
  }

  /** The sid of a remote video track that `stream` (an element's `srcObject`) holds, or null. */
  #remoteVideoSid(stream) {
    if (!(stream instanceof MediaStream)) return null;
    for (const track of stream.getVideoTracks()) {
      for (const [sid, remote] of this.remoteTracks) if (remote.track === track) return sid;
    }
    return null;
  }

  /** @returns {{info: object, participant: object} | null} */
  #findTrack(sid) {
    for (const participant of this.participants.values()) {
      const info = participant.tracks.find((t) => t.sid === sid);
      if (info) return { info, participant };
    }
    return null;
  }

  /** Ends the session once: stops timers, media and connections, then emits 'disconnected'. */
  #shutdown(reason) {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.#awaitingJoin?.reject(new Error(reason));
    this.#awaitingJoin = null;
    this.#awaitingAnswer?.reject(new Error(reason));
    this.#awaitingAnswer = null;
    for (const sid of [...this.remoteTracks.keys()]) this.#removeRemoteTrack(sid);
    this.#renderedSizes.close();
    this.#clientStats.stop();
    for (const { track } of this.localTracks.values()) track.stop();
    this.localTracks.clear();
    this.#publisher?.pc.close();
    this.#subscriber.pc.close();
    if (this.#ws && this.#ws.readyState <= WebSocket.OPEN) this.#ws.close(1000, 'left');
    this._emit('disconnected', { reason });
  }

  /** @internal */
  _send(msg) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  /**
   * Sends a protocol message as is, e.g. `{type: 'raise_hand'}`, `{type: 'chat', text}` or
   * `{type: 'request_help', topic, language}`. Replies and refusals come back as 'serverEvent'
   * and 'error' events.
   */
  send(message) {
    this._send(message);
  }

  /** @internal */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * Sends `track_settings` for the remote videos the page shows (see the header comment).
 *
 * The page attaches tracks itself, so elements are found through the media events a <video>
 * fires when its `srcObject` changes (`loadstart` when set, `emptied` when replaced or cleared),
 * caught on the document in the capture phase since they do not bubble. Each element found is
 * watched with a ResizeObserver and an IntersectionObserver; any change (and the tab's
 * visibility) schedules one debounced pass over all elements.
 */
class RenderedSizes {
  /** Watched <video> elements and the track sid each shows. */
  #elements = new Map();
  /** The last size sent per track sid ('640x360'); null to send it again whatever it is. */
  #sent = new Map();
  /** What the IntersectionObserver last said of each element (absent: nothing yet). */
  #inView = new WeakMap();
  #timer = null;
  #resizes = new ResizeObserver(() => this.#schedule());
  #intersections = new IntersectionObserver((entries) => {
    for (const entry of entries) this.#inView.set(entry.target, entry.isIntersecting);
    this.#schedule();
  }, { rootMargin: IN_VIEW_MARGIN });
  #onMediaEvent = (e) => this.#check(e.target);
  #onVisibility = () => this.#schedule();
  #send;
  #sidOf;

  /**
   * @param {(msg: object) => void} send sends a protocol message
   * @param {(srcObject: any) => string|null} sidOf the remote video track sid an element shows
   */
  constructor(send, sidOf) {
    this.#send = send;
    this.#sidOf = sidOf;
    document.addEventListener('loadstart', this.#onMediaEvent, true);
    document.addEventListener('emptied', this.#onMediaEvent, true);
    document.addEventListener('visibilitychange', this.#onVisibility);
  }

  /** The remote track went away: forget it silently (the server would refuse its size). */
  forget(sid) {
    this.#sent.delete(sid);
    for (const [el, shown] of this.#elements) if (shown === sid) this.#unwatch(el);
  }

  /** Sends every known size again on the next pass, changed or not. */
  resendAll() {
    for (const sid of this.#sent.keys()) this.#sent.set(sid, null);
    this.#schedule();
  }

  close() {
    clearTimeout(this.#timer);
    document.removeEventListener('loadstart', this.#onMediaEvent, true);
    document.removeEventListener('emptied', this.#onMediaEvent, true);
    document.removeEventListener('visibilitychange', this.#onVisibility);
    this.#resizes.disconnect();
    this.#intersections.disconnect();
    this.#elements.clear();
  }

  /** Starts, moves or stops watching `el` after its `srcObject` changed. */
  #check(el) {
    if (!(el instanceof HTMLVideoElement)) return;
    const sid = this.#sidOf(el.srcObject);
    if (sid === (this.#elements.get(el) ?? null)) return;
    if (sid) {
      this.#elements.set(el, sid);
      this.#resizes.observe(el);
      this.#intersections.observe(el);
    } else {
      this.#unwatch(el);
    }
    this.#schedule();
  }

  #unwatch(el) {
    this.#elements.delete(el);
    this.#resizes.unobserve(el);
    this.#intersections.unobserve(el);
  }

  #schedule() {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#flush(), RENDERED_SIZE_DEBOUNCE_MS);
  }

  /** Measures every watched element and sends the sizes that changed. */
  #flush() {
    // Tracks reported before and now shown nowhere go to 0x0.
    const sizes = new Map([...this.#sent.keys()].map((sid) => [sid, [0, 0]]));
    const tabShown = document.visibilityState === 'visible';
    for (const [el, sid] of this.#elements) {
      // Changed outside the document, where its events do not reach us.
      if (this.#sidOf(el.srcObject) !== sid) {
        this.#unwatch(el);
        continue;
      }
      const shown = tabShown && el.isConnected && this.#inView.get(el) !== false;
      const [width, height] = shown ? renderedSize(el) : [0, 0];
      const [w, h] = sizes.get(sid) ?? [0, 0];
      sizes.set(sid, [Math.max(w, width), Math.max(h, height)]);
    }
    for (const [sid, [width, height]] of sizes) {
      const key = `${width}x${height}`;
      if (this.#sent.get(sid) === key) continue;
      this.#sent.set(sid, key);
      this.#send({ type: 'track_settings', track_sid: sid, width, height });
    }
  }
}

/**
 * Sends `client_stats` every CLIENT_STATS_INTERVAL_MS between `start` and `stop`, each the
 * difference between two getStats() snapshots of the subscribe connection. The next report is
 * scheduled only once the previous one is out, so a slow getStats() never makes two close
 * together.
 */
class ClientStats {
  #pc;
  #send;
  #timer = null;
  /** The counters of the last report (or of `start`), by stats id; null while stopped. */
  #previous = null;
  #previousAt = 0;
  /** Bumped by start and stop, so that a getStats() in flight when they ran is discarded. */
  #generation = 0;

  /**
   * @param {() => RTCPeerConnection} pc the subscribe connection
   * @param {(msg: object) => void} send sends a protocol message
   */
  constructor(pc, send) {
    this.#pc = pc;
    this.#send = send;
  }

  /** Starts reporting from now (a new recording: counters before it are not its business). */
  async start() {
    if (this.#previous) return;
    const generation = ++this.#generation;
    const counters = await this.#counters();
    if (generation !== this.#generation) return;
    this.#previous = counters;
    this.#previousAt = performance.now();
    this.#timer = setTimeout(() => this.#report(generation), CLIENT_STATS_INTERVAL_MS);
  }

  stop() {
    this.#generation++;
    clearTimeout(this.#timer);
    this.#previous = null;
  }

  async #report(generation) {
    const counters = await this.#counters();
    if (generation !== this.#generation) return;
    const now = performance.now();
    const stats = summarize(this.#previous, counters, (now - this.#previousAt) / 1000);
    this.#previous = counters;
    this.#previousAt = now;
    if (Object.keys(stats).length > 0) this.#send({ type: 'client_stats', ...stats });
    this.#timer = setTimeout(() => this.#report(generation), CLIENT_STATS_INTERVAL_MS);
  }

  /** The inbound streams' and the selected candidate pair's figures, by stats id. */
  async #counters() {
    const pc = this.#pc();
    const reports = new Map();
    if (pc.connectionState === 'closed') return reports;
    (await pc.getStats().catch(() => new Map())).forEach((r) => reports.set(r.id, r));
    return reports;
  }
}

/**
 * A `client_stats` message's fields (as in the protocol's ClientStats) from two getStats()
 * snapshots `secs` apart; a figure that cannot be known is left out.
 */
function summarize(before, after, secs) {
  const delta = (r, field) => (r[field] ?? 0) - (before.get(r.id)?.[field] ?? 0);
  const stats = {};
  const fps = [];
  let freezes = 0;
  let freezeSecs = 0;
  let largest = null;
  let concealed = 0;
  let samples = 0;
  let lost = 0;
  let received = 0;
  let jitter = null;
  let pairId = null;
  for (const r of after.values()) {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    if (r.type !== 'inbound-rtp') continue;
    const packets = delta(r, 'packetsReceived');
    lost += delta(r, 'packetsLost');
    received += packets;
    // Only streams that are flowing: a video the server paused (not shown on the page) is not
    // frozen, and its stale jitter says nothing about this interval.
    if (packets <= 0) continue;
    jitter = Math.max(jitter ?? 0, (r.jitter ?? 0) * 1000);
    if (r.kind === 'video') {
      if (r.framesDecoded != null && secs > 0) fps.push(delta(r, 'framesDecoded') / secs);
      else if (r.framesPerSecond != null) fps.push(r.framesPerSecond);
      freezes += delta(r, 'freezeCount');
      freezeSecs += delta(r, 'totalFreezesDuration');
      if (r.frameWidth && r.frameHeight && r.frameWidth * r.frameHeight > (largest?.frameWidth ?? 0) * (largest?.frameHeight ?? 0)) largest = r;
    } else if (r.kind === 'audio') {
      concealed += delta(r, 'concealedSamples');
      samples += delta(r, 'totalSamplesReceived');
    }
  }
  // Clamped to what the server accepts (ClientStats::validate): a counter reset must not get
  // the whole report refused.
  const clamp = (x, max) => Math.min(max, Math.max(0, x));
  const round = (x, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
  if (fps.length) {
    stats.fps = round(clamp(fps.reduce((a, b) => a + b) / fps.length, 240));
    stats.freezes = Math.round(clamp(freezes, 1000));
    stats.freeze_ms = Math.round(clamp(freezeSecs * 1000, 600_000));
  }
  if (largest) {
    stats.frame_width = Math.min(largest.frameWidth, MAX_RENDERED_DIMENSION);
    stats.frame_height = Math.min(largest.frameHeight, MAX_RENDERED_DIMENSION);
  }
  if (samples > 0) stats.audio_concealed_ratio = round(clamp(concealed / samples, 1), 4);
  if (lost + received > 0) stats.packet_loss = round(clamp(lost / (lost + received), 1), 4);
  const rtt = after.get(pairId)?.currentRoundTripTime;
  if (rtt != null) stats.rtt_ms = round(clamp(rtt * 1000, 60_000));
  if (jitter != null) stats.jitter_ms = round(clamp(jitter, 60_000));
  return stats;
}

/** An element's size in device pixels, or 0x0 if either side is empty (e.g. display:none). */
function renderedSize(el) {
  const scale = globalThis.devicePixelRatio || 1;
  const device = (css) => Math.min(MAX_RENDERED_DIMENSION, Math.round(css * scale));
  const [width, height] = [device(el.clientWidth), device(el.clientHeight)];
  return width > 0 && height > 0 ? [width, height] : [0, 0];
}

/** The transceiver init of one of our tracks: send-only in `stream`, in simulcast layers if `layered`. */
function sendInit(stream, layered) {
  const init = { direction: 'sendonly', streams: [stream] };
  if (layered) init.sendEncodings = CAMERA_SIMULCAST.map((e) => ({ ...e }));
  return init;
}

/** A track for `option`: the track itself, or one captured with `option` (or `defaults` for true). */
async function captureTrack(option, kind, defaults) {
  if (option instanceof MediaStreamTrack) return option;
  const constraints = option === true ? defaults : option;
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
  return kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
}
