// A student's side of moderation: raising a hand, the invitation to the stage (accept publishes
// camera and microphone, decline tells the staff), and being taken off the stage (which stops
// them). The server decides who may publish: an invitation is `permissions_changed` with
// `can_publish`, a removal the same without it. A student who joins already on stage (the
// server gave it back its place: a reloaded tab, or a tab reopened soon after) is offered to
// turn its camera and microphone on, as an invitation is: the browser may need a click for them.

import { $, clearNotice, setStatus, showNotice } from '/web/class-ui.js';

/** `data` topic on which a student tells the staff it declined an invitation (see class-moderation.js). */
export const STAGE_TOPIC = 'stage';

/**
 * @param {object} room the SDK Room
 * @param {{publish: () => Promise<void>, stop: () => Promise<void>}} media camera and microphone
 */
export function initStage(room, media) {
  // Read each time: a rejoin makes us a new participant (a new sid).
  const me = () => room.localParticipant;
  if (me().role !== 'student') return;
  const hand = $('hand');
  hand.hidden = false;
  let raised = me().hand_raised;
  let onStage = Boolean(room.permissions?.can_publish);

  const showHand = (position) => {
    hand.textContent = raised ? 'Lower hand' : 'Raise hand';
    hand.setAttribute('aria-pressed', String(raised));
    hand.hidden = onStage;
    if (raised) setStatus(position ? `Your hand is raised (${ordinal(position)} in line).` : 'Your hand is raised.');
  };
  hand.onclick = () => {
    room.send(raised ? { type: 'lower_hand' } : { type: 'raise_hand' });
    raised = !raised;
    showHand(null);
    if (!raised) setStatus('You lowered your hand.');
  };
  showHand(null);

  const accept = async () => {
    clearNotice('invited');
    setStatus('Turning on your camera and microphone…');
    try {
      await media.publish();
      setStatus('You are on stage: the class sees and hears you.', 'ok');
    } catch (err) {
      setStatus(`Could not share camera and microphone: ${err.message}`, 'error');
    }
  };
  const decline = () => {
    clearNotice('invited');
    room.send({ type: 'data', topic: STAGE_TOPIC, payload: 'declined' });
    setStatus('You declined the invitation to the stage.');
  };

  // On stage, but publishing nothing (a page that joins anew, or a rejoin before accepting).
  const offerStage = () => {
    if (!onStage || room.localTracks.has('camera') || room.localTracks.has('microphone')) return;
    showNotice('invited', 'You are on stage: turn on your camera and microphone so that the class sees and hears you.', {
      buttons: [['Turn on camera and microphone', accept], ['Not now', decline]],
    });
  };
  offerStage();

  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    if (msg.type === 'hand_queue') {
      const index = msg.participant_sids.indexOf(me().sid);
      raised = index >= 0;
      showHand(raised ? index + 1 : null);
    } else if (msg.type === 'permissions_changed' && msg.participant_sid === me().sid) {
      const invited = msg.permissions.can_publish;
      if (invited === onStage) return;
      onStage = invited;
      raised = false;
      showHand(null);
      if (invited) {
        showNotice('invited', 'The teacher invites you on stage: the class will see and hear you.', {
          buttons: [['Accept', accept], ['Decline', decline]],
        });
      } else {
        clearNotice('invited');
        media.stop();
        setStatus('You are no longer on stage: your camera and microphone are off.');
      }
    }
  });
  // Joined again as a new participant: its hand and stage are the server's new ones.
  room.addEventListener('rejoined', () => {
    raised = me().hand_raised;
    onStage = Boolean(room.permissions?.can_publish);
    clearNotice('invited');
    showHand(null);
    offerStage();
  });
}

function ordinal(n) {
  const suffix = n % 10 === 1 && n % 100 !== 11 ? 'st' : n % 10 === 2 && n % 100 !== 12 ? 'nd' : n % 10 === 3 && n % 100 !== 13 ? 'rd' : 'th';
  return `${n}${suffix}`;
}
