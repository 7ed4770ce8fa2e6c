// The staff side of the class page (teacher, and assistants while they may moderate): the
// raised hands in order, everyone in the class with their role, stage, microphone and
// connection quality, what may be done to each, and the class-wide actions (mute all students,
// lock, end). Everything is rebuilt from the SDK's room state and the server's events; the
// server checks every action again (an assistant cannot act on the teacher, only a teacher ends
// the class).

import { STAGE_TOPIC } from '/web/class-stage.js';
import { qualityBadge } from '/web/class-quality.js';
import { $, batched, button, setStatus } from '/web/class-ui.js';

export function initModeration(room) {
  // Read each time: a rejoin makes us a new participant (a new sid).
  const me = () => room.localParticipant;
  const isTeacher = me().role === 'teacher';
  /** Everyone's live permissions by sid, as the server sends them to staff. */
  const permissions = new Map();
  /** Connection quality by sid. */
  const quality = new Map();
  /** Students who declined their invitation to the stage (until they are on it). */
  const declined = new Set();
  let hands = [];
  let locked = room.locked;

  const everyone = () => [me(), ...room.participants.values()];
  const byName = (sid) => everyone().find((p) => p.sid === sid);
  const send = (message) => room.send(message);

  const render = batched(() => {
    const moderating = Boolean(room.permissions?.can_moderate);
    $('moderation').hidden = !moderating;
    if (!moderating) return;
    $('end-class').hidden = !isTeacher;
    $('lock').textContent = locked ? 'Unlock class' : 'Lock class';
    $('lock').setAttribute('aria-pressed', String(locked));
    renderHands();
    $('people').replaceChildren(...everyone().map(personRow));
  });

  function renderHands() {
    const rows = hands.map(byName).filter(Boolean).map((p) => {
      const li = document.createElement('li');
      li.dataset.sid = p.sid;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = p.name;
      li.append(
        name,
        button('Invite to stage', () => send({ type: 'invite_to_stage', participant_sid: p.sid }), 'primary-small'),
        button('Dismiss', () => send({ type: 'lower_hand', participant_sid: p.sid })),
      );
      return li;
    });
    $('hands').replaceChildren(...rows);
    $('no-hands').hidden = rows.length > 0;
  }

  /** One person in the list: who they are, their state, and the actions on them. */
  function personRow(p) {
    const li = document.createElement('li');
    li.dataset.sid = p.sid;
    const perms = permissions.get(p.sid) ?? (p.sid === me().sid ? room.permissions : null);
    const head = document.createElement('div');
    head.className = 'who';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = p.sid === me().sid ? `${p.name} (you)` : p.name;
    head.append(name, tag(p.role, 'role'));

    const sources = new Set(p.tracks.map((t) => t.source));
    if (p.role === 'student') {
      // A student who declined keeps the permission the invitation granted, so "declined"
      // must be looked at before "invited".
      if (sources.has('camera') || sources.has('microphone')) head.append(tag('on stage', 'stage-state'));
      else if (declined.has(p.sid)) head.append(tag('declined', 'stage-state'));
      else if (perms?.can_publish) head.append(tag('invited', 'stage-state'));
    }
    if (p.role === 'assistant' && perms && !perms.can_moderate) head.append(tag('not moderating'));
    const mic = p.tracks.find((t) => t.source === 'microphone');
    if (mic) head.append(tag(mic.muted ? 'muted' : 'mic on', mic.muted ? 'muted' : 'mic'));
    const link = quality.get(p.sid);
    if (link) {
      const badge = tag(link.level);
      qualityBadge(badge, link.level, qualityFigures(link));
      head.append(badge);
    }
    li.append(head);

    const actions = document.createElement('div');
    actions.className = 'actions';
    if (p.role === 'student') {
      if (mic && !mic.muted) actions.append(button('Mute', () => send({ type: 'mute_participant_track', track_sid: mic.sid })));
      if (perms?.can_publish) {
        actions.append(button('Remove from stage', () => send({ type: 'remove_from_stage', participant_sid: p.sid })));
      } else {
        actions.append(button('Invite to stage', () => send({ type: 'invite_to_stage', participant_sid: p.sid })));
      }
    }
    // Only a teacher outranks an assistant.
    if (p.role === 'assistant' && isTeacher && perms) {
      const label = perms.can_moderate ? 'Revoke moderation' : 'Allow moderation';
      actions.append(button(label, () => send({
        type: 'set_permissions',
        participant_sid: p.sid,
        permissions: { ...perms, can_moderate: !perms.can_moderate },
      })));
    }
    if (p.role === 'student' || (p.role === 'assistant' && isTeacher)) {
      actions.append(button('Remove from class', () => send({ type: 'remove_participant', participant_sid: p.sid }), 'danger'));
    }
    if (actions.childElementCount) li.append(actions);
    return li;
  }

  $('mute-all').onclick = () => {
    send({ type: 'mute_all_students' });
    setStatus('Every student\'s microphone is muted; they can unmute themselves.');
  };
  $('lock').onclick = () => send({ type: 'lock_room', locked: !locked });
  const dialog = $('end-dialog');
  $('end-class').onclick = () => dialog.showModal();
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'end') send({ type: 'end_class' });
    dialog.returnValue = '';
  });

  room.addEventListener('serverEvent', (e) => {
    const msg = e.detail;
    switch (msg.type) {
      case 'hand_queue':
        hands = msg.participant_sids;
        break;
      case 'permissions_changed':
        permissions.set(msg.participant_sid, msg.permissions);
        if (msg.permissions.can_publish) declined.delete(msg.participant_sid);
        if (msg.participant_sid === me().sid && me().role === 'assistant') {
          setStatus(msg.permissions.can_moderate ? 'The teacher let you moderate the class.' : 'The teacher turned off your moderation of the class.');
        }
        break;
      case 'room_locked':
        locked = msg.locked;
        setStatus(locked ? 'The class is locked: nobody new can join.' : 'The class is open again: students can join.');
        break;
      case 'connection_quality':
        quality.set(msg.participant_sid, { level: msg.quality, loss: msg.loss_permille, rtt: msg.rtt_ms });
        break;
      case 'data':
        if (msg.topic === STAGE_TOPIC && msg.payload === 'declined') {
          declined.add(msg.from);
          const who = byName(msg.from);
          if (who && room.permissions?.can_moderate) setStatus(`${who.name} declined the invitation to the stage.`);
        }
        break;
      default:
        return;
    }
    render();
  });
  room.addEventListener('participantLeft', (e) => {
    permissions.delete(e.detail.participant.sid);
    quality.delete(e.detail.participant.sid);
    render();
  });
  // Joined again: the room as the server has it now.
  room.addEventListener('rejoined', () => {
    permissions.clear();
    quality.clear();
    hands = [];
    locked = room.locked;
    render();
  });
  for (const type of ['participantJoined', 'trackPublished', 'trackUnpublished', 'trackMuted']) {
    room.addEventListener(type, render);
  }
  render();
}

/** A small label in a person's row. */
function tag(text, className = '') {
  const el = document.createElement('span');
  el.className = `tag ${className}`.trim();
  el.textContent = text;
  return el;
}

/** The tooltip of a participant's badge: the server's figures behind the level, when it sent them. */
function qualityFigures({ level, loss, rtt }) {
  const figures = [];
  if (loss !== undefined) figures.push(`${(loss / 10).toFixed(1)} % loss`);
  if (rtt !== undefined) figures.push(`${rtt} ms round trip`);
  return figures.length > 0 ? `${level}: ${figures.join(', ')}` : '';
}
