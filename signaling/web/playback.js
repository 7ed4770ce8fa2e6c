// /playback/{id}: a recording's files played in sync on one timeline, and its QoS timeline.
//
// One clock (the position on the recording's shared timeline) drives every <video> and
// <audio>: each element plays from `offset_ms` of manifest.json on, and is put back in step
// when it drifts. The clock waits while an element that should be playing is still loading,
// so a slow file holds the others instead of falling behind. Under the media, the QoS samples
// (qos.jsonl) are drawn as SVG line charts, one per measure, with the events as markers that
// seek there.

import { $, SignInNeeded, api, formatTime, setStatus, showSignIn, token } from '/web/review.js';

const id = decodeURIComponent(location.pathname.split('/').pop());
/** An element this far (s) from where the clock says it should be is moved there. */
const MAX_DRIFT_S = 0.3;
/** HTMLMediaElement.HAVE_FUTURE_DATA: it can play on from here. */
const CAN_PLAY = 3;

/** The measures charted: qos.jsonl fields by name (see signaling/src/recording/qos.rs). */
const CHARTS = [
  { title: 'Bitrate', unit: 'kbit/s', match: /_bps$/, scale: (v) => v / 1000 },
  { title: 'Loss', unit: '%', match: /loss|concealed_ratio/, scale: (v) => v * 100 },
  { title: 'Round trip', unit: 'ms', match: /^rtt_ms$/, scale: (v) => v },
  { title: 'Simulcast layer', unit: '-1 paused', match: /^layer$/, scale: (v) => v },
  { title: 'Connection quality', unit: '0 poor, 1 good, 2 excellent', match: /^quality$/, scale: (v) => v },
];
const COLORS = ['#3d8bfd', '#3ccf91', '#f5a524', '#e5484d', '#b58cff', '#4cc9f0'];
const DASHES = ['', '6 3', '2 3', '10 3 2 3'];
/**
 * The events shown as markers, with their icons. The others (layer changes, tracks published)
 * are frequent and show in the charts already. `freeze` is a client_stats line with freezes.
 */
const MARKERS = {
  present: '+', join: '+', leave: '−', reconnecting: '↻', reconnected: '↻', chat: '✉', freeze: '❄',
  screen_share_started: '▣', screen_share_stopped: '▢', mute: 'm', moderation: '⚑', transfer: '⇄',
  recording_gap: '!', qos_gap: '!',
};

/** The position on the shared timeline, in ms; runs while playing. */
const clock = {
  playing: false,
  at: 0,
  since: 0,
  durationMs: 0,
  now() {
    return this.playing ? Math.min(this.durationMs, this.at + performance.now() - this.since) : this.at;
  },
  set(ms) {
    this.at = Math.max(0, Math.min(this.durationMs, ms));
    this.since = performance.now();
  },
};

/** Every media element with where its file sits on the timeline. */
const media = [];

async function main() {
  let data;
  try {
    data = await api(`/api/recordings/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err instanceof SignInNeeded) return showSignIn(err.message);
    return setStatus(`Could not open the recording: ${err.message}`, 'error');
  }
  const { recording, export: manifest } = data;
  $('all').href = token ? `/recordings?${new URLSearchParams({ token })}` : '/recordings';
  $('player').hidden = false;
  const started = new Date(recording.started_at_unix_ms);
  $('title').textContent = `${recording.room} · ${started.toLocaleString()}`;
  $('details').textContent = recording.participants.map((p) => `${p.name} (${p.role})`).join(', ');
  if (!manifest) {
    // Exported when it stops: look again shortly, unless the export failed.
    if (recording.state === 'failed') return setStatus(`The export failed: ${recording.error ?? 'unknown error'}`, 'error');
    setStatus(recording.state === 'recording' ? 'Still recording…' : 'Preparing the files…');
    setTimeout(main, 3000);
    return;
  }
  const people = new Map();
  for (const p of recording.participants) {
    people.set(p.sid, p);
    people.set(p.identity, p);
  }
  const qos = await loadQos();
  // qos.jsonl counts from the recording's start, manifest.json from its earliest file.
  const qosShiftMs = recording.started_at_unix_ms - manifest.start_unix_ms;
  const lastQosMs = qos.reduce((last, line) => Math.max(last, line.t_us / 1000 + qosShiftMs), 0);
  clock.durationMs = Math.max(manifest.duration_ms, lastQosMs);
  buildMedia(manifest, people);
  buildTimeline(qos, qosShiftMs, people);
  wireTransport();
  setStatus(`${manifest.files.length} file${manifest.files.length === 1 ? '' : 's'}`, 'ok');
  requestAnimationFrame(tick);
}

/** The QoS timeline's lines, or none if it was not recorded. */
async function loadQos() {
  const res = await fetch(`/api/recordings/${encodeURIComponent(id)}/qos`, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) {
    $('no-qos').hidden = false;
    return [];
  }
  return (await res.text()).split('\n').filter((line) => line.trim()).flatMap((line) => {
    try {
      return [JSON.parse(line)];
    } catch {
      return []; // A torn last line after a crash.
    }
  });
}

function describe(who, people) {
  const p = people.get(who);
  return p ? `${p.name} (${p.role})` : who;
}

/** Which file is the big one: a learner's shared screen, else a teacher's, else any. */
function rank(file, people) {
  const role = people.get(file.participant)?.role;
  const screen = file.sources.includes('screen_share');
  const video = file.format === 'webm';
  return (screen ? 4 : 0) + (role === 'learner' ? 2 : role === 'teacher' ? 1 : 0) + (video ? 8 : 0);
}

function buildMedia(manifest, people) {
  const files = [...manifest.files].sort((a, b) => rank(b, people) - rank(a, people));
  files.forEach((file, index) => {
    const video = file.format === 'webm';
    const el = document.createElement(video ? 'video' : 'audio');
    el.src = `/api/recordings/${encodeURIComponent(id)}/files/${encodeURIComponent(file.path)}?${new URLSearchParams({ token })}`;
    el.preload = 'auto';
    el.playsInline = true;
    el.dataset.offsetMs = file.offset_ms;
    el.dataset.durationMs = file.duration_ms;
    const tile = document.createElement('figure');
    tile.className = `tile${video ? '' : ' audio-only'}`;
    const caption = document.createElement('figcaption');
    const source = file.sources.includes('screen_share') ? 'screen' : video ? 'camera' : 'microphone';
    caption.textContent = `${describe(file.participant, people)} · ${source}`;
    if (!video) {
      const avatar = document.createElement('div');
      avatar.className = 'avatar';
      avatar.textContent = (people.get(file.participant)?.name ?? '?').slice(0, 1).toUpperCase();
      tile.append(avatar);
    }
    tile.append(el, caption);
    (index === 0 && video ? $('main-tile') : $('side-tiles')).append(tile);
    media.push({ el, tile, offsetMs: file.offset_ms, durationMs: file.duration_ms });
  });
}

/** Puts every element where the clock is; `force` moves them even if only slightly off. */
function sync(force) {
  const t = clock.now();
  for (const m of media) {
    const local = (t - m.offsetMs) / 1000;
    const inRange = local >= 0 && local < m.durationMs / 1000;
    m.tile.classList.toggle('idle', !inRange);
    const target = Math.max(0, Math.min(local, m.durationMs / 1000));
    if (force || (inRange && Math.abs(m.el.currentTime - target) > MAX_DRIFT_S)) m.el.currentTime = target;
    if (clock.playing && inRange && m.el.paused) m.el.play().catch(() => {});
    if ((!clock.playing || !inRange) && !m.el.paused) m.el.pause();
  }
}

function play() {
  if (clock.now() >= clock.durationMs) clock.set(0);
  clock.set(clock.now());
  clock.playing = true;
  sync(true);
  showPlaying();
}

function pause() {
  clock.set(clock.now());
  clock.playing = false;
  sync(false);
  showPlaying();
}

function seek(ms) {
  clock.set(ms);
  sync(true);
  showPosition();
}

function showPlaying() {
  $('play').textContent = clock.playing ? 'Pause' : 'Play';
}

function showPosition() {
  const t = clock.now();
  $('seek').value = (t / 1000).toFixed(1);
  $('clock').textContent = `${formatTime(t)} / ${formatTime(clock.durationMs)}`;
  $('playhead').style.left = `${(100 * t) / (clock.durationMs || 1)}%`;
}

function wireTransport() {
  $('seek').max = (clock.durationMs / 1000).toFixed(1);
  $('play').addEventListener('click', () => (clock.playing ? pause() : play()));
  $('seek').addEventListener('input', () => seek(Number($('seek').value) * 1000));
  $('charts').addEventListener('click', (event) => {
    const box = $('charts').getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * clock.durationMs);
  });
  showPosition();
}

function tick() {
  if (clock.playing) {
    const t = clock.now();
    // Hold the clock while a file that should play is still loading (a seek, a slow disk).
    const loading = media.some((m) => t >= m.offsetMs && t < m.offsetMs + m.durationMs && m.el.readyState < CAN_PLAY);
    if (loading) clock.set(t);
    if (t >= clock.durationMs) pause();
    else sync(false);
  }
  showPosition();
  requestAnimationFrame(tick);
}

function buildTimeline(qos, shiftMs, people) {
  const participants = [...new Set(qos.map((line) => line.participant).filter(Boolean))];
  const color = (who) => COLORS[participants.indexOf(who) % COLORS.length];
  const x = (ms) => (1000 * ms) / (clock.durationMs || 1);
  const events = [];
  // series: chart index → "participant field" → points
  const series = CHARTS.map(() => new Map());
  for (const line of qos) {
    const ms = line.t_us / 1000 + shiftMs;
    if (line.kind === 'event') {
      if (line.event in MARKERS) events.push({ ms, name: line.event, who: line.participant, line });
      continue;
    }
    if (line.kind === 'client_stats' && line.freezes > 0) {
      events.push({ ms, name: 'freeze', who: line.participant, line });
    }
    for (const [key, value] of Object.entries(line)) {
      const chart = CHARTS.findIndex((c) => c.match.test(key));
      if (typeof value !== 'number' || chart < 0) continue;
      const field = line.kind === 'client_stats' ? `browser ${key}` : key;
      const name = `${line.participant ?? ''}\u0000${field}`;
      if (!series[chart].has(name)) series[chart].set(name, []);
      series[chart].get(name).push([ms, CHARTS[chart].scale(value)]);
    }
  }
  CHARTS.forEach((chart, index) => {
    if (series[index].size > 0) $('charts').append(drawChart(chart, series[index], { x, color, people, events }));
  });
  drawMarkers(events, people);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attributes) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  return el;
}

/** One measure over time: a line per participant and field, the events as faint lines. */
function drawChart(chart, lines, { x, color, people, events }) {
  const height = 80;
  const values = [...lines.values()].flat().map(([, v]) => v);
  // From 0 (or below: a paused layer is -1) up, so that a flat line does not look like a swing.
  const min = Math.min(0, ...values);
  const max = Math.max(min + 1e-9, ...values);
  const y = (v) => (height - 2 - ((height - 4) * (v - min)) / (max - min)).toFixed(1);
  const figure = document.createElement('figure');
  figure.className = 'chart';
  const caption = document.createElement('figcaption');
  caption.textContent = `${chart.title}${chart.unit ? ` (${chart.unit})` : ''} · up to ${+max.toFixed(2)}`;
  const plot = svg('svg', { viewBox: `0 0 1000 ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${chart.title} over time` });
  for (const event of events) {
    plot.append(svg('line', { x1: x(event.ms), x2: x(event.ms), y1: 0, y2: height, class: 'event-line', 'vector-effect': 'non-scaling-stroke' }));
  }
  const legend = document.createElement('ul');
  legend.className = 'legend';
  const fieldIndex = new Map();
  for (const [name, points] of lines) {
    const [who, field] = name.split('\u0000');
    if (!fieldIndex.has(field)) fieldIndex.set(field, fieldIndex.size);
    const stroke = color(who);
    const dash = DASHES[fieldIndex.get(field) % DASHES.length];
    const d = points.map(([ms, v], i) => `${i ? 'L' : 'M'}${x(ms).toFixed(1)},${y(v)}`).join('');
    plot.append(svg('path', { d, fill: 'none', stroke, 'stroke-width': 2, 'stroke-dasharray': dash, 'vector-effect': 'non-scaling-stroke', class: 'series' }));
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.borderTop = `3px ${dash ? 'dashed' : 'solid'} ${stroke}`;
    item.append(swatch, `${describe(who, people)} ${field.replaceAll('_', ' ')}`);
    legend.append(item);
  }
  figure.append(caption, plot, legend);
  return figure;
}

/** The events as buttons along the top of the timeline: each seeks to its moment. */
function drawMarkers(events, people) {
  const seen = new Set();
  for (const event of events.sort((a, b) => a.ms - b.ms)) {
    const detail = event.line.reason ?? event.line.text ?? event.line.message ?? '';
    const label = `${formatTime(event.ms)} ${event.name}${event.who ? ` · ${describe(event.who, people)}` : ''}${detail ? ` (${detail})` : ''}`;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'marker';
    button.dataset.event = event.name;
    button.style.left = `${(100 * event.ms) / (clock.durationMs || 1)}%`;
    button.textContent = MARKERS[event.name];
    button.title = label;
    button.setAttribute('aria-label', label);
    button.addEventListener('click', () => seek(event.ms));
    $('markers').append(button);
    seen.add(event.name);
  }
  $('marker-legend').textContent = [...seen].map((name) => `${MARKERS[name]} ${name.replaceAll('_', ' ')}`).join('   ');
}

main();
