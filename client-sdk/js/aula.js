// Aula browser SDK: join a room, publish camera / microphone / screen, receive everyone else.
//
// Plain ES modules with no dependencies and no build step; the server serves them under /sdk/.
// This file is the entry point and the whole public API; the others are its parts:
//   protocol.js        the protocol version, AulaError, the protocol's reasons and limits
//   socket.js          the signaling WebSocket, where it reconnects (ReconnectTargets) and when
//   room.js            Room: the session, the room's state from the server's messages, resume and rejoin
//   peer.js            one RTCPeerConnection and its ICE candidates; negotiations one at a time
//   publisher.js       the publish side: capture, publish_offer, mute, publishing again after a rejoin
//   subscriber.js      the subscribe side: subscribe_answer, remote tracks named by what they carry
//   rendered-sizes.js  track_settings from how large the page shows each remote video
//   client-stats.js    client_stats from getStats() while the room is recorded
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

import { Room } from './room.js';
import { websocketUrl } from './socket.js';

export { AulaError, PROTOCOL_VERSION } from './protocol.js';
export { ReconnectTargets, rejoinDelay } from './socket.js';
export { Room };

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
