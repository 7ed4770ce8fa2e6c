//! The support desk's state: agents on duty, learners waiting, sessions under way.
//!
//! Agents and learners talk to the desk over their ordinary WebSocket (a lobby room); the desk
//! answers through their outboxes, like the room registry. When a request is routed, the desk
//! creates a private room (`support-<session id>`) and mints a token for each side, so the pair
//! join it with a second connection and nobody else can: the room's name is unguessable and no
//! other token names it. Learners get every source (screen + camera), as [`Role::Learner`]'s
//! defaults say.
//!
//! Like the registry, the desk is plain data behind one mutex; it returns what the caller must
//! do afterwards (observe metrics, close an ended session's room, send webhooks).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use aula_protocol::{ErrorCode, Role, ServerEvent, WaitingLearner};

use super::routing::{self, AgentSlot, HelpRequest};
use crate::room::{Outbox, Outgoing, Refused};
use crate::token::{self, AccessClaims, ApiKeys};

/// How long the tokens of a support room are valid: far longer than any session.
const SESSION_TOKEN_TTL: Duration = Duration::from_secs(4 * 3600);
/// Starting guess of a session's length, until real sessions have been measured.
const INITIAL_MEAN_SESSION: Duration = Duration::from_secs(300);
/// Weight of the newest session in the running mean (an EWMA follows a changing desk).
const MEAN_WEIGHT: f64 = 0.2;
/// Most skills per agent, longest skill/topic/language, most seats per agent: bounds on
/// untrusted input that no real desk comes near.
const MAX_SKILLS: usize = 32;
const MAX_SKILL_BYTES: usize = 32;
const MAX_CAPACITY: u32 = 16;
/// Ended sessions remembered for their learner's rating. A learner rates right after the end,
/// so the newest thousands are plenty, and the bound keeps an abandoned desk's memory flat.
const MAX_RATEABLE: usize = 4096;

/// `SupportEnded` reasons.
pub(crate) const REASON_ENDED: &str = "ended";
pub(crate) const REASON_TRANSFERRED: &str = "transferred";
pub(crate) const REASON_AGENT_LEFT: &str = "agent left";

/// Who is talking to the desk: the participant's lobby session.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub sid: String,
    pub identity: String,
    /// Display name, shown to the other side and used as its name in the private room.
    pub name: String,
    pub role: Role,
    pub outbox: Outbox,
}

#[derive(Debug)]
struct Agent {
    caller: Caller,
    slot: AgentSlot,
}

#[derive(Debug)]
struct Waiting {
    caller: Caller,
    request: HelpRequest,
    queued_at: Instant,
    /// Set when a transfer re-queued an existing session: it keeps its id and room.
    session: Option<(String, String)>,
}

#[derive(Debug, Clone)]
struct SupportSession {
    id: String,
    room: String,
    agent: Caller,
    learner: Caller,
    topic: String,
    language: String,
    started: Instant,
}

/// A session that just started, for metrics and webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    pub session_id: String,
    pub room: String,
    pub agent: String,
    pub learner: String,
    pub waited: Duration,
}

/// A session that just ended: its room is closed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub session_id: String,
    pub room: String,
    pub duration: Duration,
}

/// What a desk operation asks of the caller.
#[derive(Debug, Default)]
pub(crate) struct DeskEffects {
    pub started: Vec<Started>,
    pub ended: Vec<Ended>,
}

/// An agent as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct AgentView {
    pub participant_sid: String,
    pub identity: String,
    pub skills: Vec<String>,
    pub capacity: u32,
    pub active: u32,
    pub idle_secs: u64,
}

/// A waiting request as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct WaitingView {
    pub participant_sid: String,
    pub identity: String,
    pub topic: String,
    pub language: String,
    pub waited_secs: u64,
}

#[derive(Debug)]
pub(crate) struct Desk {
    keys: ApiKeys,
    agents: Vec<Agent>,
    queue: Vec<Waiting>,
    sessions: HashMap<String, SupportSession>,
    /// `(session id, learner sid)` of ended sessions not rated yet, oldest first.
    rateable: VecDeque<(String, String)>,
    mean_session: Duration,
}

fn bad(message: impl Into<String>) -> Refused {
    (ErrorCode::BadMessage, message.into())
}

fn check_word(what: &str, value: &str) -> Result<String, Refused> {
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty()
        || value.len() > MAX_SKILL_BYTES
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(format!(
            "{what} must be 1 to {MAX_SKILL_BYTES} letters, digits, '-' or '_'"
        )));
    }
    Ok(value)
}

fn send(to: &Caller, event: ServerEvent) {
    let _ = to.outbox.send(Outgoing::Event(event));
}

fn random_id() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

impl Desk {
    pub fn new(keys: ApiKeys) -> Self {
        Self {
            keys,
            agents: Vec::new(),
            queue: Vec::new(),
            sessions: HashMap::new(),
            rateable: VecDeque::new(),
            mean_session: INITIAL_MEAN_SESSION,
        }
    }

    /// Puts an agent on duty (or updates its skills and capacity), then routes waiting learners.
    pub fn go_on_duty(
        &mut self,
        caller: Caller,
        skills: &[String],
        capacity: u32,
        now: Instant,
    ) -> Result<DeskEffects, Refused> {
        if caller.role != Role::Agent {
            return Err((ErrorCode::Forbidden, "only agents go on duty".into()));
        }
        if skills.is_empty() || skills.len() > MAX_SKILLS {
            return Err(bad(format!("give 1 to {MAX_SKILLS} skills")));
        }
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(bad(format!("capacity must be 1 to {MAX_CAPACITY}")));
        }
        let skills = skills
            .iter()
            .map(|s| check_word("a skill", s))
            .collect::<Result<Vec<_>, _>>()?;
        match self.agents.iter_mut().find(|a| a.caller.sid == caller.sid) {
            Some(agent) => {
                agent.slot.skills = skills;
                agent.slot.capacity = capacity;
            }
            None => self.agents.push(Agent {
                slot: AgentSlot {
                    id: caller.sid.clone(),
                    skills,
                    capacity,
                    active: 0,
                    idle_since: now,
                },
                caller,
            }),
        }
        Ok(self.route(now))
    }

    /// Takes no new learners; sessions under way continue.
    pub fn go_off_duty(&mut self, sid: &str, now: Instant) -> Result<DeskEffects, Refused> {
        let agent = self
            .agents
            .iter_mut()
            .find(|a| a.caller.sid == sid)
            .ok_or_else(|| (ErrorCode::Conflict, "you are not on duty".to_owned()))?;
        agent.slot.capacity = 0;
        // Estimates of the learners still waiting change with one agent fewer.
        Ok(self.route(now))
    }

    /// Queues a learner's request and routes it at once if an agent is free.
    pub fn request_help(
        &mut self,
        caller: Caller,
        topic: &str,
        language: &str,
        now: Instant,
    ) -> Result<DeskEffects, Refused> {
        if caller.role != Role::Learner {
            return Err((ErrorCode::Forbidden, "only learners ask for help".into()));
        }
        let topic = check_word("the topic", topic)?;
        let language = check_word("the language", language)?;
        let busy = self.queue.iter().any(|w| w.caller.sid == caller.sid)
            || self
                .sessions
                .values()
                .any(|s| s.learner.identity == caller.identity);
        if busy {
            return Err((
                ErrorCode::Conflict,
                "you already asked for help; cancel or end that first".into(),
            ));
        }
        self.queue.push(Waiting {
            request: HelpRequest {
                id: caller.sid.clone(),
                topic,
                language,
            },
            caller,
            queued_at: now,
            session: None,
        });
        Ok(self.route(now))
    }

    /// Withdraws a learner's waiting request.
    pub fn cancel_help(&mut self, sid: &str, now: Instant) -> Result<DeskEffects, Refused> {
        let before = self.queue.len();
        self.queue.retain(|w| w.caller.sid != sid);
        if self.queue.len() == before {
            return Err((ErrorCode::Conflict, "you have no request waiting".into()));
        }
        Ok(self.route(now))
    }

    /// Hands a session to an agent with `skill`: the current agent is released, the learner
    /// waits at the head of the queue, in the same room.
    pub fn transfer(
        &mut self,
        sid: &str,
        session_id: &str,
        skill: &str,
        now: Instant,
    ) -> Result<DeskEffects, Refused> {
        let skill = check_word("the skill", skill)?;
        let session = self
            .sessions
            .get(session_id)
            .filter(|s| s.agent.sid == sid)
            .cloned()
            .ok_or_else(|| unknown_session(session_id))?;
        self.sessions.remove(session_id);
        self.release_agent(&session.agent.sid, now);
        send(
            &session.agent,
            ServerEvent::SupportEnded {
                session_id: session.id.clone(),
                reason: REASON_TRANSFERRED.into(),
            },
        );
        self.queue.insert(
            0,
            Waiting {
                request: HelpRequest {
                    id: session.learner.sid.clone(),
                    topic: skill,
                    language: session.language,
                },
                caller: session.learner,
                queued_at: now,
                session: Some((session.id, session.room)),
            },
        );
        Ok(self.route(now))
    }

    /// Ends a session, by its agent or its learner.
    pub fn end(
        &mut self,
        sid: &str,
        session_id: &str,
        now: Instant,
    ) -> Result<DeskEffects, Refused> {
        let ours = self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.agent.sid == sid || s.learner.sid == sid);
        if !ours {
            return Err(unknown_session(session_id));
        }
        let mut effects = DeskEffects::default();
        if let Some(ended) = self.finish(session_id, REASON_ENDED, now) {
            effects.ended.push(ended);
        }
        let routed = self.route(now);
        effects.started = routed.started;
        Ok(effects)
    }

    /// A learner rates a session of its own that has ended; each session once.
    pub fn rate(&mut self, sid: &str, session_id: &str) -> Result<(), Refused> {
        let index = self
            .rateable
            .iter()
            .position(|(id, learner)| id == session_id && learner == sid)
            .ok_or_else(|| {
                (
                    ErrorCode::UnknownSession,
                    format!("no ended support session {session_id} of yours to rate"),
                )
            })?;
        self.rateable.remove(index);
        Ok(())
    }

    /// A lobby connection closed: its waiting request goes; an agent's sessions end.
    pub fn disconnect(&mut self, sid: &str, now: Instant) -> DeskEffects {
        self.queue.retain(|w| w.caller.sid != sid);
        // Ratings come over the same connection, so a departed learner's can no longer come.
        self.rateable.retain(|(_, learner)| learner != sid);
        let mut effects = DeskEffects::default();
        let agents_sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.agent.sid == sid)
            .map(|s| s.id.clone())
            .collect();
        for id in agents_sessions {
            effects
                .ended
                .extend(self.finish(&id, REASON_AGENT_LEFT, now));
        }
        self.agents.retain(|a| a.caller.sid != sid);
        effects.started = self.route(now).started;
        effects
    }

    pub fn agents(&self, now: Instant) -> Vec<AgentView> {
        self.agents
            .iter()
            .map(|a| AgentView {
                participant_sid: a.caller.sid.clone(),
                identity: a.caller.identity.clone(),
                skills: a.slot.skills.clone(),
                capacity: a.slot.capacity,
                active: a.slot.active,
                idle_secs: now.saturating_duration_since(a.slot.idle_since).as_secs(),
            })
            .collect()
    }

    pub fn queue(&self, now: Instant) -> Vec<WaitingView> {
        self.queue
            .iter()
            .map(|w| WaitingView {
                participant_sid: w.caller.sid.clone(),
                identity: w.caller.identity.clone(),
                topic: w.request.topic.clone(),
                language: w.request.language.clone(),
                waited_secs: now.saturating_duration_since(w.queued_at).as_secs(),
            })
            .collect()
    }

    fn release_agent(&mut self, agent_sid: &str, now: Instant) {
        if let Some(agent) = self.agents.iter_mut().find(|a| a.caller.sid == agent_sid) {
            agent.slot.active = agent.slot.active.saturating_sub(1);
            agent.slot.idle_since = now;
        }
    }

    fn finish(&mut self, session_id: &str, reason: &str, now: Instant) -> Option<Ended> {
        let session = self.sessions.remove(session_id)?;
        self.release_agent(&session.agent.sid, now);
        if self.rateable.len() == MAX_RATEABLE {
            self.rateable.pop_front();
        }
        self.rateable
            .push_back((session.id.clone(), session.learner.sid.clone()));
        let duration = now.saturating_duration_since(session.started);
        self.mean_session = self
            .mean_session
            .mul_f64(1.0 - MEAN_WEIGHT)
            .saturating_add(duration.mul_f64(MEAN_WEIGHT));
        for side in [&session.agent, &session.learner] {
            send(
                side,
                ServerEvent::SupportEnded {
                    session_id: session.id.clone(),
                    reason: reason.to_owned(),
                },
            );
        }
        Some(Ended {
            session_id: session.id,
            room: session.room,
            duration,
        })
    }

    /// Assigns what can be assigned, then tells every learner still waiting where it stands.
    fn route(&mut self, now: Instant) -> DeskEffects {
        let mut slots: Vec<AgentSlot> = self.agents.iter().map(|a| a.slot.clone()).collect();
        let requests: Vec<HelpRequest> = self.queue.iter().map(|w| w.request.clone()).collect();
        let pairs = routing::assign_queue(&mut slots, &requests);
        let mut effects = DeskEffects::default();
        let mut taken = Vec::new();
        for (qi, ai) in pairs {
            taken.push(qi);
            let waiting = &self.queue[qi];
            let agent = &mut self.agents[ai];
            agent.slot.active += 1;
            let (id, room) = waiting.session.clone().unwrap_or_else(|| {
                let id = random_id();
                let room = format!("support-{id}");
                (id, room)
            });
            let session = SupportSession {
                id: id.clone(),
                room: room.clone(),
                agent: agent.caller.clone(),
                learner: waiting.caller.clone(),
                topic: waiting.request.topic.clone(),
                language: waiting.request.language.clone(),
                started: now,
            };
            self.assigned(&session);
            effects.started.push(Started {
                session_id: id.clone(),
                room,
                agent: session.agent.identity.clone(),
                learner: session.learner.identity.clone(),
                waited: now.saturating_duration_since(waiting.queued_at),
            });
            self.sessions.insert(id, session);
        }
        let mut qi = 0;
        self.queue.retain(|_| {
            let keep = !taken.contains(&qi);
            qi += 1;
            keep
        });
        self.send_positions();
        self.send_queue(now);
        effects
    }

    /// Sends each side its token for the session's room.
    fn assigned(&self, session: &SupportSession) {
        for (me, peer, role) in [
            (&session.agent, &session.learner, Role::Agent),
            (&session.learner, &session.agent, Role::Learner),
        ] {
            let mut claims =
                AccessClaims::new(&session.room, &me.identity, role, SESSION_TOKEN_TTL);
            claims.name = me.name.clone();
            match token::mint(&self.keys, &claims) {
                Ok(token) => send(
                    me,
                    ServerEvent::SupportAssigned {
                        session_id: session.id.clone(),
                        room: session.room.clone(),
                        token,
                        peer_identity: peer.identity.clone(),
                        peer_name: peer.name.clone(),
                        topic: session.topic.clone(),
                        language: session.language.clone(),
                    },
                ),
                // Identities were checked when their own tokens were verified; this cannot fail
                // short of a broken key, which the log must show.
                Err(e) => tracing::error!(session = session.id, "cannot mint a support token: {e}"),
            }
        }
    }

    /// Shows every agent on the desk the learners waiting, in queue order. Agents off duty get
    /// it too, so they can see when going back on duty is needed.
    fn send_queue(&self, now: Instant) {
        let waiting: Vec<WaitingLearner> = self
            .queue
            .iter()
            .map(|w| WaitingLearner {
                name: w.caller.name.clone(),
                topic: w.request.topic.clone(),
                language: w.request.language.clone(),
                waited_secs: now.saturating_duration_since(w.queued_at).as_secs(),
            })
            .collect();
        for agent in &self.agents {
            send(
                &agent.caller,
                ServerEvent::SupportQueue {
                    waiting: waiting.clone(),
                },
            );
        }
    }

    fn send_positions(&self) {
        let slots: Vec<AgentSlot> = self.agents.iter().map(|a| a.slot.clone()).collect();
        let mut per_topic: HashMap<&str, u32> = HashMap::new();
        for waiting in &self.queue {
            let position = per_topic.entry(waiting.request.topic.as_str()).or_insert(0);
            *position += 1;
            let wait = routing::estimated_wait(
                &slots,
                &waiting.request.topic,
                *position as usize,
                self.mean_session,
            );
            send(
                &waiting.caller,
                ServerEvent::SupportQueued {
                    position: *position,
                    estimated_wait_secs: wait.map(|w| w.as_secs()),
                },
            );
        }
    }
}

fn unknown_session(session_id: &str) -> Refused {
    (
        ErrorCode::UnknownSession,
        format!("no support session {session_id} of yours"),
    )
}

#[cfg(test)]
mod tests;
