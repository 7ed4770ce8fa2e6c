// Aula browser SDK: the Room, one joined session. Joins over the signaling socket, keeps the
// room's state (participants, permissions, lock, recording) from the server's messages, and
// carries the session through outages: resumes a dropped socket, joins again when the session
// is lost, or ends it (see "Reconnecting" in aula.js's header). Media is delegated to the
// publish side (publisher.js) and the subscribe side (subscriber.js); the socket and its
// reconnect timing are socket.js's.
//
// Part of the SDK whose entry point is aula.js; see its header for the API and the events.

import { AulaError, FINAL_JOIN_ERRORS, PING_INTERVAL_MS, PROTOCOL_VERSION, REASON_PEER_FAILED } from './protocol.js';
import { Publisher } from './publisher.js';
import { REJOIN_ATTEMPT_TIMEOUT_MS, REJOIN_WINDOW_MS, RESUME_WINDOW_MS, SignalingSocket, rejoinDelay } from './socket.js';
import { Subscriber } from './subscriber.js';

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
  /** Whether a lost session is joined again by itself (see "Reconnecting" in aula.js's header). */
  autoRejoin = true;
  /** @type {string[]} the other nodes our node last named (see "Reconnecting" in aula.js's header) */
  alternates = [];

  /** The WebSocket, and where to connect, resume and join again (see SignalingSocket). */
  #socket;
  /** The publish connection and our tracks on it. */
  #pub;
  /** The subscribe connection, the remote tracks on it, and what is reported about them. */
  #sub;
  /** Resolvers of `_join`, waiting for `joined`. */
  #awaitingJoin = null;
  #pingTimer = null;
  #closed = false;
  /** `leave()` was called: the session ending now is not joined again. */
  #leaving = false;
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

  constructor(wsUrl, { iceServers = [], rejoin = true } = {}) {
    super();
    this.#socket = new SignalingSocket(
      wsUrl,
      (text) => this.#onMessage(text),
      (e, unreachable) => this.#onClose(e, unreachable),
    );
    this.autoRejoin = rejoin;
    const rtcConfig = { iceServers, bundlePolicy: 'max-bundle' };
    this.#pub = new Publisher(this, rtcConfig);
    this.#sub = new Subscriber(this, rtcConfig);
  }

  get publisher() {
    return this.#pub.peer?.pc ?? null;
  }

  get subscriber() {
    return this.#sub.peer.pc;
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
   * Given a timeout (a rejoin attempt), a socket that does not open in time counts as
   * unreachable (see SignalingSocket.open).
   */
  #openJoin(token, timeoutMs = 0) {
    const ws = this.#socket.open({ type: 'join', version: PROTOCOL_VERSION, token }, timeoutMs > 0);
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
   * Publishes local media. Each option is `true` (capture with defaults), MediaTrackConstraints,
   * or a MediaStreamTrack you captured yourself. A source already published is left as it is.
   * Resolves when the server answered the offer; rejects with an AulaError (e.g. code
   * 'forbidden' for students), in which case nothing of this call stays published.
   * @param {{camera?: any, microphone?: any, screen?: any, simulcast?: boolean}} options
   *   `simulcast` (default true) sends the camera in three layers.
   */
  publish(options) {
    if (this.#closed) return Promise.reject(new Error('the room is closed'));
    return this.#pub.publish(options);
  }

  /** Stops publishing `source` ('camera', 'microphone', 'screen_share', 'screen_share_audio'). */
  unpublish(source) {
    return this.#pub.unpublish(source);
  }

  /**
   * Mutes or unmutes one of our sources. The track keeps flowing disabled (black / silence, a few
   * bits per second), so unmuting is instant and needs no renegotiation; the server tells the
   * others with `track_muted`.
   */
  setMuted(source, muted) {
    this.#pub.setMuted(source, muted);
  }

  /**
   * A closed socket of a joined session is resumed if the server gave a resume token: new
   * sockets send `resume` (at once, then every second) until the server answers `resumed`,
   * refuses, or RESUME_WINDOW_MS pass. Then, or without a resume token, the session is joined
   * again (or ended: `autoRejoin` off). A join whose socket closes before `joined` fails.
   * A socket that closes before it opened (`unreachable`) could not reach its node: the next
   * attempt goes to another (see ReconnectTargets).
   */
  #onClose(e, unreachable) {
    if (this.#closed) return;
    if (this.#awaitingJoin) {
      const waiting = this.#awaitingJoin;
      this.#awaitingJoin = null;
      const err = new Error(e.reason || `cannot reach ${this.#socket.url}`);
      err.unreachable = unreachable;
      waiting.reject(err);
      return;
    }
    if (unreachable) this.#socket.unreachable();
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
   * aula.js's header): at once, then with a growing delay, for REJOIN_WINDOW_MS.
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
    this.#socket.close(1000, 'rejoining');
    this.#sub.renew();
    const deadline = Date.now() + REJOIN_WINDOW_MS;
    for (let attempt = 0; ; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, rejoinDelay(attempt)));
      if (this.#closed) return;
      if (attempt > 0 && Date.now() >= deadline) break;
      try {
        await this.#openJoin(this.#token, REJOIN_ATTEMPT_TIMEOUT_MS);
      } catch (err) {
        if (this.#closed) return;
        if (err.unreachable) this.#socket.unreachable();
        this.#socket.close();
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
      this.#pub.publishAgain(() => this.#closed || this.#rejoining);
      return;
    }
    this.#rejoining = false;
    this.#shutdown(reason);
  }

  /** The lost session's media goes: remote tracks, both connections; our tracks are kept to publish again. */
  #dropMedia(reason) {
    this.#pub.abandon(new Error(reason));
    this.#sub.removeAll();
    this.#sub.stopStats();
    this.#pub.drop();
    this.#sub.close();
  }

  #reopen() {
    if (this.#closed) return;
    this.#socket.open({ type: 'resume', version: PROTOCOL_VERSION, resume_token: this.#resumeToken }, true);
  }

  /** @internal For tests: drops the WebSocket as a network change would (media stays up). */
  _dropConnection() {
    this.#socket.close(4000, 'dropped for a test');
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
        this.#socket.reached();
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
        for (const info of participant.tracks) this.#sub.removeRemoteTrack(info.sid);
        this.participants.delete(msg.participant_sid);
        this._emit('participantLeft', { participant });
        break;
      }
      case 'track_published':
        if (msg.track.participant_sid === this.localParticipant.sid) this.#pub.onTrackPublished(msg.track);
        else this.#sub.onTrackPublished(msg.track);
        break;
      case 'track_unpublished': {
        this.#sub.removeRemoteTrack(msg.track_sid);
        // Only the server's word removes a track from a participant's list (see removeRemoteTrack).
        const found = this.#sub.findTrack(msg.track_sid);
        if (!found) break;
        found.participant.tracks = found.participant.tracks.filter((t) => t.sid !== msg.track_sid);
        this._emit('trackUnpublished', found);
        break;
      }
      case 'track_muted': {
        if (msg.participant_sid === this.localParticipant.sid) {
          this.#pub.onTrackMuted(msg.track_sid, msg.muted);
          break;
        }
        const found = this.#sub.findTrack(msg.track_sid);
        if (!found) break;
        found.info.muted = msg.muted;
        this._emit('trackMuted', { ...found, muted: msg.muted });
        break;
      }
      case 'publish_answer':
        this.#pub.onAnswer(msg.sdp);
        break;
      case 'subscribe_offer': {
        const peer = this.#sub.peer;
        this.#sub.answer(msg.sdp).catch((err) => {
          // A connection closed meanwhile (the session was lost) is no news.
          if (peer === this.#sub.peer) this._emit('error', { code: 'subscribe_failed', message: String(err) });
        });
        break;
      }
      case 'candidate': {
        const peer = msg.target === 'publish' ? this.#pub.peer : this.#sub.peer;
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
        this.#socket.reached();
        this.#resumeDeadline = null;
        this.#resumeAttempts = 0;
        this.#reconnecting = false;
        this._emit('reconnected', {});
        // Sizes sent while the socket was down were dropped.
        this.#sub.resendSizes();
        // Our address may have changed: new ICE credentials for what we send (the server
        // restarts the subscribe side itself with a new offer).
        if (this.#pub.peer) {
          this.#pub.negotiate(true).catch((err) => this._emit('error', { code: 'ice_restart_failed', message: String(err) }));
        }
        break;
      case 'alternates':
        this.alternates = msg.urls ?? [];
        this.#socket.setAlternates(this.alternates);
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
        if (msg.state === 'recording') this.#sub.startStats();
        else this.#sub.stopStats();
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
    if (this.#pub.refused(code, error)) return;
    this._emit('error', { code, message });
  }

  /** Ends the session once: stops timers, media and connections, then emits 'disconnected'. */
  #shutdown(reason) {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#pingTimer);
    this.#awaitingJoin?.reject(new Error(reason));
    this.#awaitingJoin = null;
    this.#pub.abandon(new Error(reason));
    this.#sub.removeAll();
    this.#sub.stopReporting();
    this.#pub.stop();
    this.#sub.close();
    this.#socket.close(1000, 'left');
    this._emit('disconnected', { reason });
  }

  /** @internal */
  _send(msg) {
    this.#socket.send(msg);
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
