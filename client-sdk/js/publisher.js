// Aula browser SDK: the publish side. Captures our camera, microphone and screen, offers them to
// the server on the publish connection (this client offers, the server answers), mutes them,
// takes them out again, and publishes them again on a new connection after a rejoin. Our
// tracks are the Room's `localTracks`; the Room routes `publish_answer`, refusals and the
// server's word on our tracks here.
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

import { Peer } from './peer.js';

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


/** Camera capture when `publish({camera: true})`: 720p is what the `f` layer is sized for. */
const DEFAULT_CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/** The publish connection and our tracks on it, for one Room. */
export class Publisher {
  #room;
  #rtcConfig;
  /** The publish connection: null until the first `publish`, and while a lost session is joined again. */
  #peer = null;
  /** Resolvers of the one publish negotiation waiting for its `publish_answer`. */
  #awaitingAnswer = null;

  /**
   * @param {import('./room.js').Room} room whose `localTracks` these are, and which sends and emits
   * @param {RTCConfiguration} rtcConfig
   */
  constructor(room, rtcConfig) {
    this.#room = room;
    this.#rtcConfig = rtcConfig;
  }

  /** The publish connection's Peer, or null. */
  get peer() {
    return this.#peer;
  }

  /** See Room.publish. */
  async publish({ camera, microphone, screen, simulcast = true } = {}) {
    const room = this.#room;
    const captured = [];
    try {
      if (camera && !room.localTracks.has('camera')) {
        captured.push(['camera', await captureTrack(camera, 'video', DEFAULT_CAMERA)]);
      }
      if (microphone && !room.localTracks.has('microphone')) {
        captured.push(['microphone', await captureTrack(microphone, 'audio', true)]);
      }
      if (screen && !room.localTracks.has('screen_share')) {
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

    this.#peer ??= new Peer('publish', this.#rtcConfig, room);
    const stream = new MediaStream();
    for (const [source, track] of captured) {
      const layered = source === 'camera' && simulcast;
      if (source === 'screen_share') track.contentHint = 'detail';
      const transceiver = this.#peer.pc.addTransceiver(track, sendInit(stream, layered));
      room.localTracks.set(source, { track, transceiver, sid: null, simulcast: layered });
      // The browser's "Stop sharing" button ends the screen track: take it out of the room too.
      if (source === 'screen_share') track.addEventListener('ended', () => room.unpublish('screen_share').catch(() => {}));
    }
    try {
      await this.negotiate();
    } catch (err) {
      for (const [source] of captured) this.#dropLocal(source);
      // Refused before the server ever answered (a student without the grant): it has no
      // publish connection for us, so this one is dropped, or its trickled candidates would
      // each come back as a 'bad_candidate' error.
      if (this.#peer && !this.#peer.pc.remoteDescription) {
        this.#peer.pc.close();
        this.#peer = null;
      }
      throw err;
    }
  }

  /** See Room.unpublish. */
  async unpublish(source) {
    if (!this.#dropLocal(source)) return;
    if (source === 'screen_share' && this.#room.localTracks.has('screen_share_audio')) this.#dropLocal('screen_share_audio');
    await this.negotiate();
  }

  /** See Room.setMuted. */
  setMuted(source, muted) {
    const local = this.#room.localTracks.get(source);
    if (!local) return;
    local.track.enabled = !muted;
    local.muted = muted;
    if (local.sid) this.#room._send({ type: 'mute_track', track_sid: local.sid, muted });
  }

  /**
   * Publishes our tracks again after a rejoin, on a new publish connection; refused ones are
   * stopped. `lost()` says whether the session was lost again meanwhile.
   */
  async publishAgain(lost) {
    const room = this.#room;
    for (const [source, local] of [...room.localTracks]) {
      if (local.track.readyState !== 'live') room.localTracks.delete(source);
    }
    if (room.localTracks.size === 0) return;
    this.#peer = new Peer('publish', this.#rtcConfig, room);
    const stream = new MediaStream();
    for (const local of room.localTracks.values()) {
      local.transceiver = this.#peer.pc.addTransceiver(local.track, sendInit(stream, local.simulcast));
    }
    const sources = [...room.localTracks.keys()];
    try {
      await this.negotiate();
    } catch (err) {
      // Lost again meanwhile: the next rejoin publishes them.
      if (lost()) return;
      for (const source of sources) this.#dropLocal(source);
      if (this.#peer && !this.#peer.pc.remoteDescription) {
        this.#peer.pc.close();
        this.#peer = null;
      }
      for (const source of sources) {
        room._emit('localTrackUnpublished', { source, code: err.code ?? 'publish_failed', message: err.message });
      }
    }
  }

  /** Removes our track for `source` from the publisher connection; false if there was none. */
  #dropLocal(source) {
    const local = this.#room.localTracks.get(source);
    if (!local) return false;
    this.#room.localTracks.delete(source);
    local.track.stop();
    // The transceiver is made inactive, which tells the server the track is gone, rather than
    // stopped. Stopping rejects its m-line: once every m-line was rejected Chrome refused the
    // next offer ("max-bundle is used but no bundle group found"), and an m-line the browser
    // recycles for a later track was not picked up again by the server's WebRTC stack. Either
    // way a student taken off the stage could not publish again. Inactive m-lines stay in the
    // bundle; each later track gets a new one. (None while a lost session is joined again.)
    const pc = this.#peer?.pc ?? null;
    if (local.transceiver && pc && pc.signalingState !== 'closed') {
      local.transceiver.direction = 'inactive';
      local.transceiver.sender.replaceTrack(null).catch(() => {});
    }
    return true;
  }

  /**
   * Offers the publisher connection's current tracks to the server and applies its answer.
   * Queued: a call made while an exchange is in flight runs after it, with the tracks as they
   * are by then, so the server always ends up with the latest set. `iceRestart` after a resume.
   */
  negotiate(iceRestart = false) {
    const peer = this.#peer;
    // None while a lost session is joined again: what is in `localTracks` is published then.
    if (!peer) return Promise.resolve();
    return peer.serial.run(async () => {
      const offer = await peer.pc.createOffer({ iceRestart });
      await peer.pc.setLocalDescription(offer);
      const tracks = [...this.#room.localTracks].map(([source, { track }]) => ({ track_id: track.id, source }));
      const answer = new Promise((resolve, reject) => {
        this.#awaitingAnswer = { resolve, reject };
      });
      this.#room._send({ type: 'publish_offer', sdp: peer.pc.localDescription.sdp, tracks });
      try {
        await peer.setRemoteDescription({ type: 'answer', sdp: await answer });
      } catch (err) {
        // Back to the last agreed state, so the next negotiation starts clean.
        if (peer.pc.signalingState === 'have-local-offer') await peer.pc.setLocalDescription({ type: 'rollback' });
        throw err;
      }
    });
  }

  /** The server's `publish_answer`, for the negotiation waiting for it. */
  onAnswer(sdp) {
    const waiting = this.#awaitingAnswer;
    this.#awaitingAnswer = null;
    waiting?.resolve(sdp);
  }

  /**
   * A server error that refuses the negotiation in flight (the server refuses a student's offer
   * with 'forbidden' instead of answering it) fails it; false if it is not for it.
   */
  refused(code, error) {
    if (this.#awaitingAnswer && ['forbidden', 'bad_sdp', 'track_mismatch', 'unsupported_codec', 'internal'].includes(code)) {
      const waiting = this.#awaitingAnswer;
      this.#awaitingAnswer = null;
      waiting.reject(error);
      return true;
    }
    return false;
  }

  /** Fails the negotiation waiting for an answer, if any: the session ended or was lost. */
  abandon(error) {
    this.#awaitingAnswer?.reject(error);
    this.#awaitingAnswer = null;
  }

  /** The server announced one of our tracks (`track_published` for us): it has a sid now. */
  onTrackPublished(info) {
    const local = this.#room.localTracks.get(info.source);
    if (!local) return;
    local.sid = info.sid;
    // A mute set before the server named the track is sent now.
    if (local.muted) this.#room._send({ type: 'mute_track', track_sid: info.sid, muted: true });
    this.#room._emit('localTrackPublished', { source: info.source, track: local.track, info });
  }

  /** The server says one of our tracks is (un)muted: a moderator's mute, or our own echoed. */
  onTrackMuted(sid, muted) {
    const entry = [...this.#room.localTracks].find(([, local]) => local.sid === sid);
    if (!entry) return;
    const [source, local] = entry;
    if (Boolean(local.muted) === muted) return; // our own setMuted, echoed
    local.track.enabled = !muted;
    local.muted = muted;
    this.#room._emit('localTrackMuted', { source, muted });
  }

  /** The lost session's publish connection goes; our tracks are kept to publish again. */
  drop() {
    this.#peer?.pc.close();
    this.#peer = null;
    for (const local of this.#room.localTracks.values()) {
      local.sid = null;
      local.transceiver = null;
    }
  }

  /** The session is over: stops our tracks and closes the publish connection. */
  stop() {
    for (const { track } of this.#room.localTracks.values()) track.stop();
    this.#room.localTracks.clear();
    this.#peer?.pc.close();
  }
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
