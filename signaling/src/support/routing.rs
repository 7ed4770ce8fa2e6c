//! Which agent helps which learner: pure functions on tables of agents and requests.
//!
//! No clock, no I/O: time is passed in as [`Instant`]s so that the tables in the tests say
//! exactly who has been idle longest. The desk ([`super::desk`]) owns the state and calls these.
//!
//! The rule, in order:
//! 1. the agent must be on duty with a free seat (`active < capacity`);
//! 2. the agent must have the request's topic as a skill (an agent without `billing` cannot
//!    help with billing, however idle);
//! 3. among those, one who also speaks the request's language wins;
//! 4. then the one idle longest (free since the earliest instant), which spreads work fairly;
//! 5. then the agent id, so that the choice is deterministic.
//!
//! Language is a preference rather than a requirement so that a learner asking in a language
//! no agent on duty speaks is still helped, instead of waiting forever.

use std::time::{Duration, Instant};

/// An agent as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentSlot {
    pub id: String,
    /// Lower-case skills, e.g. `audio`, `billing`, `en`, `zh`.
    pub skills: Vec<String>,
    pub capacity: u32,
    pub active: u32,
    /// When the agent last became free (went on duty or finished a session).
    pub idle_since: Instant,
}

impl AgentSlot {
    fn has(&self, skill: &str) -> bool {
        self.skills.iter().any(|s| s.eq_ignore_ascii_case(skill))
    }

    fn is_free(&self) -> bool {
        self.active < self.capacity
    }

    /// Whether this agent could ever take a request on `topic` (free or not).
    pub fn serves(&self, topic: &str) -> bool {
        self.capacity > 0 && self.has(topic)
    }
}

/// A learner's request as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelpRequest {
    pub id: String,
    pub topic: String,
    pub language: String,
}

/// The index of the best free agent for `request`, if any (see the module docs for the rule).
pub(crate) fn best_agent(agents: &[AgentSlot], request: &HelpRequest) -> Option<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_free() && a.has(&request.topic))
        .min_by(|(_, a), (_, b)| {
            let speaks = |x: &AgentSlot| !x.has(&request.language);
            speaks(a)
                .cmp(&speaks(b))
                .then(a.idle_since.cmp(&b.idle_since))
                .then(a.id.cmp(&b.id))
        })
        .map(|(i, _)| i)
}

/// Assigns as many queued requests as possible, oldest first, updating the agents' load and
/// idle times. Returns `(request index in queue, agent index)` pairs; the caller removes the
/// assigned requests from its queue. A request no agent can take now does not block later
/// ones on other topics.
pub(crate) fn assign_queue(agents: &mut [AgentSlot], queue: &[HelpRequest]) -> Vec<(usize, usize)> {
    let mut assigned = Vec::new();
    for (qi, request) in queue.iter().enumerate() {
        if let Some(ai) = best_agent(agents, request) {
            agents[ai].active += 1;
            assigned.push((qi, ai));
        }
    }
    assigned
}

/// Estimated wait for the request at `position` (1 = next) on `topic`: the requests ahead
/// share the seats of the agents who serve the topic, each seat freeing after about
/// `mean_session`. `None` when no agent on duty serves the topic at all.
pub(crate) fn estimated_wait(
    agents: &[AgentSlot],
    topic: &str,
    position: usize,
    mean_session: Duration,
) -> Option<Duration> {
    let seats: u32 = agents
        .iter()
        .filter(|a| a.serves(topic))
        .map(|a| a.capacity)
        .sum();
    if seats == 0 {
        return None;
    }
    // Rounds of sessions before this request's turn: position 1..=seats waits one round.
    let rounds = position.div_ceil(seats as usize).max(1);
    Some(mean_session.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(
        id: &str,
        skills: &[&str],
        capacity: u32,
        active: u32,
        idle_secs_ago: u64,
    ) -> AgentSlot {
        let now = base();
        AgentSlot {
            id: id.into(),
            skills: skills.iter().map(|s| s.to_string()).collect(),
            capacity,
            active,
            idle_since: now - Duration::from_secs(idle_secs_ago),
        }
    }

    fn base() -> Instant {
        // Far enough from the process start that subtracting an hour cannot underflow.
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| Instant::now() + Duration::from_secs(3600))
    }

    fn request(topic: &str, language: &str) -> HelpRequest {
        HelpRequest {
            id: format!("{topic}-{language}"),
            topic: topic.into(),
            language: language.into(),
        }
    }

    #[test]
    fn best_agent_table() {
        // (agents, request, expected agent id)
        let cases: Vec<(Vec<AgentSlot>, HelpRequest, Option<&str>)> = vec![
            // Only the one with the topic skill.
            (
                vec![
                    agent("a", &["video", "en"], 1, 0, 500),
                    agent("b", &["audio", "en"], 1, 0, 10),
                ],
                request("audio", "en"),
                Some("b"),
            ),
            // Both have the topic: the one speaking the language wins over the longer idle.
            (
                vec![
                    agent("a", &["audio", "en"], 1, 0, 500),
                    agent("b", &["audio", "zh"], 1, 0, 10),
                ],
                request("audio", "zh"),
                Some("b"),
            ),
            // Same skills: the longest idle.
            (
                vec![
                    agent("a", &["audio", "en"], 1, 0, 10),
                    agent("b", &["audio", "en"], 1, 0, 300),
                ],
                request("audio", "en"),
                Some("b"),
            ),
            // The longest idle is full: the other one.
            (
                vec![
                    agent("a", &["audio", "en"], 2, 1, 10),
                    agent("b", &["audio", "en"], 1, 1, 300),
                ],
                request("audio", "en"),
                Some("a"),
            ),
            // Nobody speaks the language: still routed by topic.
            (
                vec![agent("a", &["billing", "en"], 1, 0, 10)],
                request("billing", "fr"),
                Some("a"),
            ),
            // Nobody has the topic: queue.
            (
                vec![agent("a", &["audio", "en"], 1, 0, 10)],
                request("billing", "en"),
                None,
            ),
            // Everyone busy: queue.
            (
                vec![
                    agent("a", &["audio"], 1, 1, 10),
                    agent("b", &["audio"], 0, 0, 10),
                ],
                request("audio", "en"),
                None,
            ),
            // Skills match case-insensitively; ties go to the id.
            (
                vec![
                    agent("b", &["Audio"], 1, 0, 10),
                    agent("a", &["audio"], 1, 0, 10),
                ],
                request("audio", "en"),
                Some("a"),
            ),
            (vec![], request("audio", "en"), None),
        ];
        for (i, (agents, req, expected)) in cases.into_iter().enumerate() {
            let got = best_agent(&agents, &req).map(|ix| agents[ix].id.as_str());
            assert_eq!(got, expected, "case {i}: {req:?}");
        }
    }

    #[test]
    fn queue_assigns_oldest_first_without_blocking_other_topics() {
        let mut agents = vec![
            agent("audio-1", &["audio", "en"], 1, 0, 100),
            agent("billing-1", &["billing", "en"], 2, 0, 50),
        ];
        let queue = vec![
            request("audio", "en"),
            request("audio", "zh"), // no second audio seat: stays queued
            request("billing", "en"),
            request("video", "en"), // nobody: stays queued
            request("billing", "zh"),
        ];
        let assigned = assign_queue(&mut agents, &queue);
        assert_eq!(assigned, vec![(0, 0), (2, 1), (4, 1)]);
        assert_eq!(agents[0].active, 1);
        assert_eq!(agents[1].active, 2);
        assert!(assign_queue(&mut agents, &queue[1..2]).is_empty());
    }

    #[test]
    fn wait_estimate_table() {
        let five = Duration::from_secs(300);
        let agents = vec![
            agent("a", &["audio"], 2, 2, 0),
            agent("b", &["audio", "video"], 1, 1, 0),
            agent("c", &["video"], 0, 0, 0),
        ];
        // (topic, position, expected)
        let cases = [
            ("audio", 1, Some(five)),
            ("audio", 3, Some(five)),
            ("audio", 4, Some(five * 2)),
            ("video", 1, Some(five)),
            ("video", 2, Some(five * 2)),
            ("billing", 1, None),
        ];
        for (topic, position, expected) in cases {
            assert_eq!(
                estimated_wait(&agents, topic, position, five),
                expected,
                "{topic} at {position}"
            );
        }
    }
}
