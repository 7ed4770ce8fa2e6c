// Aula browser SDK: the subscribe side. Answers the server's offers on the subscribe connection
// (the server offers, this client answers), names the remote tracks that arrive after the
// track they carry (`trackSubscribed` / `trackUnsubscribed`), and reports on what is received:
// the rendered sizes of the videos shown (rendered-sizes.js) and, while the room is recorded,
// `client_stats` (client-stats.js). Received tracks are the Room's `remoteTracks`.
//
// Part of the SDK whose entry point is aula.js; see its header for the API.

import { ClientStats } from './client-stats.js';
import { Peer } from './peer.js';
import { RenderedSizes } from './rendered-sizes.js';

/** The subscribe connection and the remote tracks on it, for one Room. */
export class Subscriber {
  #room;
  #rtcConfig;
  /** The subscribe connection; a new one after a rejoin (see `renew`). */
  #peer;
  /** Reports how large remote videos are shown (see "Rendered sizes" in aula.js's header). */
  #renderedSizes;
  /** Sends `client_stats` while the room is recorded (see "Recording" in aula.js's header). */
  #clientStats;

  /**
   * @param {import('./room.js').Room} room whose `remoteTracks` and `participants` these are,
   *   and which sends and emits
   * @param {RTCConfiguration} rtcConfig
   */
  constructor(room, rtcConfig) {
    this.#room = room;
    this.#renderedSizes = new RenderedSizes((msg) => room._send(msg), (stream) => this.#remoteVideoSid(stream));
    this.#clientStats = new ClientStats(() => this.#peer.pc, (msg) => room._send(msg));
    this.#rtcConfig = rtcConfig;
    this.renew();
  }

  /** A new subscribe connection; made before joining so that a `subscribe_offer` right behind `joined` finds it. */
  renew() {
    this.#peer = new Peer('subscribe', this.#rtcConfig, this.#room);
    this.#peer.pc.addEventListener('track', (e) => this.#onRemoteTrack(e));
  }

  /** The subscribe connection's Peer. */
  get peer() {
    return this.#peer;
  }

  /** Answers one `subscribe_offer`; queued so that offers are answered in the order they came. */
  answer(sdp) {
    const peer = this.#peer;
    return peer.serial.run(async () => {
      await peer.setRemoteDescription({ type: 'offer', sdp });
      const answer = await peer.pc.createAnswer();
      await peer.pc.setLocalDescription(answer);
      this.#room._send({ type: 'subscribe_answer', sdp: peer.pc.localDescription.sdp });
    });
  }

  /** Another participant's track was announced (`track_published`). */
  onTrackPublished(info) {
    const room = this.#room;
    const participant = room.participants.get(info.participant_sid);
    if (!participant) return;
    participant.tracks = participant.tracks.filter((t) => t.sid !== info.sid).concat(info);
    room._emit('trackPublished', { info, participant });
    // The media may have arrived before the announcement; now it can be named.
    const remote = room.remoteTracks.get(info.sid);
    if (remote) room._emit('trackSubscribed', { ...remote, info, participant });
  }

  #onRemoteTrack(event) {
    const stream = event.streams[0];
    if (!stream) return;
    const sid = stream.id;
    const remote = { track: event.track, stream };
    this.#room.remoteTracks.set(sid, remote);
    // The server renegotiated the track away (its m-line went inactive): the track leaves its stream.
    stream.addEventListener('removetrack', (e) => this.removeRemoteTrack(sid, e.track));
    const found = this.findTrack(sid);
    if (found) this.#room._emit('trackSubscribed', { ...remote, ...found });
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
  removeRemoteTrack(sid, track = null) {
    const remote = this.#room.remoteTracks.get(sid);
    if (!remote || (track && remote.track !== track)) return;
    this.#room.remoteTracks.delete(sid);
    // Before listeners detach it: a size for a track the server no longer sends us is refused.
    this.#renderedSizes.forget(sid);
    const found = this.findTrack(sid);
    if (found) this.#room._emit('trackUnsubscribed', { track: remote.track, ...found });
  }

  /** Forgets every received track (see removeRemoteTrack): the session ended or was lost. */
  removeAll() {
    for (const sid of [...this.#room.remoteTracks.keys()]) this.removeRemoteTrack(sid);
  }

  /** The sid of a remote video track that `stream` (an element's `srcObject`) holds, or null. */
  #remoteVideoSid(stream) {
    if (!(stream instanceof MediaStream)) return null;
    for (const track of stream.getVideoTracks()) {
      for (const [sid, remote] of this.#room.remoteTracks) if (remote.track === track) return sid;
    }
    return null;
  }

  /** @returns {{info: object, participant: object} | null} */
  findTrack(sid) {
    for (const participant of this.#room.participants.values()) {
      const info = participant.tracks.find((t) => t.sid === sid);
      if (info) return { info, participant };
    }
    return null;
  }

  /** Sends every rendered size again (sizes sent while the socket was down were dropped). */
  resendSizes() {
    this.#renderedSizes.resendAll();
  }

  /** Starts sending `client_stats` (the room is being recorded). */
  startStats() {
    this.#clientStats.start();
  }

  /** Stops sending `client_stats`. */
  stopStats() {
    this.#clientStats.stop();
  }

  /** The session is over: no more rendered sizes or stats. */
  stopReporting() {
    this.#renderedSizes.close();
    this.#clientStats.stop();
  }

  /** Closes the subscribe connection (a rejoin makes a new one with `renew`). */
  close() {
    this.#peer.pc.close();
  }
}
