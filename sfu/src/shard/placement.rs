//! Which shard each participant and track lives on, and which tracks are piped where: the
//! shard set's bookkeeping, with no I/O (see the module docs of [`crate::shard`]).
//!
//! A participant lives on one shard with both its connections. A publisher goes to the
//! least-loaded shard; a subscriber to the shard of the first track it subscribes to, so
//! that a room stays whole on one shard (no pipe, no second copy) while that shard is not
//! more than [`SPREAD_SLACK`] participants above the least-loaded one; past that it goes to
//! the least-loaded shard and the track is piped there. A large class so spreads over every
//! shard, and two small rooms land on different shards.
//!
//! Load is counted in participants: a crude measure (a teacher costs more than a student, a
//! video subscriber more than an audio one), but one that needs nothing from the shards and
//! balances a class, where everyone is alike.

use std::collections::{BTreeMap, HashMap};

use crate::api::{ParticipantId, TrackSid};

/// How many more participants than the least-loaded shard a room's shard may hold before the
/// room's next subscriber goes elsewhere. A class spread over two shards costs up to a fifth
/// more CPU per forwarded packet than on one (measured at 200 students: the pipe's hand-off
/// and the other shard's datagrams handed over; see the README's performance section), so a
/// room stays whole until splitting pays: a class of 48 stays on one shard, a class of 200
/// splits about 124/76, a lecture of 1,000 about 524/476 on two.
pub const SPREAD_SLACK: usize = 48;

/// Links numbered from here are pipes between shards, not links to other nodes: pipe
/// `PIPE_LINKS + k` carries tracks into shard `k`. The control plane numbers its links from 1
/// upwards, far below.
pub const PIPE_LINKS: u64 = 1 << 62;

/// The pipe link into shard `shard`.
pub fn pipe_link(shard: usize) -> u64 {
    PIPE_LINKS + shard as u64
}

/// The shard a pipe link leads into, if `link` is one.
pub fn pipe_target(link: u64) -> Option<usize> {
    link.checked_sub(PIPE_LINKS)
        .and_then(|k| usize::try_from(k).ok())
}

/// A track piped from its home shard into another, as track `index` on that pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipe {
    pub from: usize,
    pub to: usize,
    pub index: u64,
}

#[derive(Debug)]
struct TrackHome {
    home: usize,
    /// Shards the track is piped into, with its index on each pipe.
    piped: BTreeMap<usize, u64>,
}

#[derive(Debug)]
pub struct Placement {
    load: Vec<usize>,
    participants: HashMap<ParticipantId, usize>,
    tracks: HashMap<TrackSid, TrackHome>,
    /// Tracks gone at home, with the shards they were piped into that have not yet said
    /// they dropped their copy.
    closing: HashMap<TrackSid, Vec<usize>>,
    next_index: u64,
}

impl Placement {
    pub fn new(shards: usize) -> Self {
        Self {
            load: vec![0; shards.max(1)],
            participants: HashMap::new(),
            tracks: HashMap::new(),
            closing: HashMap::new(),
            next_index: 0,
        }
    }

    pub fn shards(&self) -> usize {
        self.load.len()
    }

    /// Participants placed on each shard.
    pub fn load(&self) -> &[usize] {
        &self.load
    }

    pub fn participant(&self, participant: &str) -> Option<usize> {
        self.participants.get(participant).copied()
    }

    /// The participant's shard, placing it on the least-loaded one if it has none.
    pub fn place(&mut self, participant: &str) -> usize {
        let shard = self.least_loaded();
        self.place_on(participant, shard)
    }

    /// Where a subscriber to `track` goes (see the module docs), and the pipe to open first if
    /// the track is not on that shard yet.
    pub fn place_subscriber(&mut self, participant: &str, track: &str) -> (usize, Option<Pipe>) {
        let home = self.tracks.get(track).map(|t| t.home);
        let shard = match (self.participant(participant), home) {
            (Some(shard), _) => shard,
            (None, Some(home)) => {
                let least = self.least_loaded();
                let shard = if self.load[home] <= self.load[least] + SPREAD_SLACK {
                    home
                } else {
                    least
                };
                self.place_on(participant, shard)
            }
            (None, None) => self.place(participant),
        };
        (shard, self.pipe(track, shard))
    }

    /// The pipe that brings `track` to `shard`, if it is neither at home there nor piped
    /// there already (it is recorded as piped from now on).
    fn pipe(&mut self, track: &str, shard: usize) -> Option<Pipe> {
        let entry = self.tracks.get_mut(track)?;
        if entry.home == shard || entry.piped.contains_key(&shard) {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        entry.piped.insert(shard, index);
        Some(Pipe {
            from: entry.home,
            to: shard,
            index,
        })
    }

    /// Forgets a pipe whose opening failed, so that the next subscriber tries again.
    pub fn pipe_failed(&mut self, track: &str, shard: usize) {
        if let Some(entry) = self.tracks.get_mut(track) {
            entry.piped.remove(&shard);
        }
    }

    /// Forgets a participant that left; its shard's load drops.
    pub fn remove(&mut self, participant: &str) -> Option<usize> {
        let shard = self.participants.remove(participant)?;
        self.load[shard] -= 1;
        Some(shard)
    }

    /// A track now lives on `shard` (published there, or imported from another node).
    pub fn track_at(&mut self, track: &str, shard: usize) {
        self.tracks
            .entry(track.to_owned())
            .or_insert_with(|| TrackHome {
                home: shard,
                piped: BTreeMap::new(),
            });
    }

    /// Where a track imported from another node goes: the least-loaded shard (its
    /// subscribers follow it there), or where it is already.
    pub fn place_track(&mut self, track: &str) -> usize {
        let shard = self.least_loaded();
        self.track_at(track, shard);
        self.tracks[track].home
    }

    /// The shard a track lives on.
    pub fn home(&self, track: &str) -> Option<usize> {
        self.tracks.get(track).map(|t| t.home)
    }

    /// The track's home if it is piped into `shard`.
    pub fn piped_from(&self, track: &str, shard: usize) -> Option<usize> {
        let entry = self.tracks.get(track)?;
        entry.piped.contains_key(&shard).then_some(entry.home)
    }

    /// Every shard that has the track: its home first, then those it is piped into.
    pub fn shards_with(&self, track: &str) -> Vec<usize> {
        self.tracks.get(track).map_or_else(Vec::new, |entry| {
            std::iter::once(entry.home)
                .chain(entry.piped.keys().copied())
                .collect()
        })
    }

    /// Forgets a track that is gone; returns the shards it was piped into, which are to drop
    /// their copies (see [`Placement::copy_dropped`]).
    pub fn track_gone(&mut self, track: &str) -> Vec<usize> {
        let Some(entry) = self.tracks.remove(track) else {
            return Vec::new();
        };
        let importers: Vec<usize> = entry.piped.into_keys().collect();
        if !importers.is_empty() {
            self.closing.insert(track.to_owned(), importers.clone());
        }
        importers
    }

    /// Whether `shard` had a copy of `track`, piped in, that it has now dropped (its
    /// `TrackUnpublished` is then not news).
    pub fn copy_dropped(&mut self, track: &str, shard: usize) -> bool {
        if self.piped_from(track, shard).is_some() {
            // Dropped while the track lives on (its last subscriber there is not the cause:
            // imports stay until the track ends): open the pipe again if asked.
            self.pipe_failed(track, shard);
            return true;
        }
        let Some(shards) = self.closing.get_mut(track) else {
            return false;
        };
        let before = shards.len();
        shards.retain(|&k| k != shard);
        let dropped = shards.len() != before;
        if shards.is_empty() {
            self.closing.remove(track);
        }
        dropped
    }

    fn place_on(&mut self, participant: &str, shard: usize) -> usize {
        *self
            .participants
            .entry(participant.to_owned())
            .or_insert_with(|| {
                self.load[shard] += 1;
                shard
            })
    }

    fn least_loaded(&self) -> usize {
        (0..self.load.len())
            .min_by_key(|&k| self.load[k])
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_room_stays_on_its_publishers_shard_and_a_second_room_goes_elsewhere() {
        let mut placement = Placement::new(2);
        let teacher = placement.place("teacher-a");
        placement.track_at("TR_a", teacher);
        for i in 0..SPREAD_SLACK {
            assert_eq!(
                placement.place_subscriber(&format!("a{i}"), "TR_a"),
                (teacher, None)
            );
        }
        let other = placement.place("teacher-b");
        assert_ne!(other, teacher);
    }

    #[test]
    fn a_large_class_spreads_with_one_pipe_per_shard() {
        let mut placement = Placement::new(2);
        let home = placement.place("teacher");
        placement.track_at("TR_cam", home);
        let mut pipes = Vec::new();
        for i in 0..200 {
            let (_, pipe) = placement.place_subscriber(&format!("s{i}"), "TR_cam");
            pipes.extend(pipe);
        }
        assert_eq!(pipes.len(), 1, "{pipes:?}");
        assert_eq!(pipes[0].from, home);
        assert_eq!(pipes[0].to, 1 - home);
        let load = placement.load();
        assert_eq!(load.iter().sum::<usize>(), 201);
        assert!(
            load[home].abs_diff(load[1 - home]) <= SPREAD_SLACK + 1,
            "{load:?}"
        );
        assert_eq!(placement.shards_with("TR_cam"), vec![home, 1 - home]);
        assert_eq!(placement.piped_from("TR_cam", 1 - home), Some(home));
        assert_eq!(placement.piped_from("TR_cam", home), None);
    }

    #[test]
    fn a_subscriber_already_placed_gets_a_pipe_for_a_track_elsewhere() {
        let mut placement = Placement::new(2);
        let a = placement.place("teacher-a");
        let b = placement.place("teacher-b");
        placement.track_at("TR_b", b);
        let (shard, _) = placement.place_subscriber("student", "TR_a-missing");
        assert_eq!(shard, a, "least loaded after both teachers is the first");
        let (shard, pipe) = placement.place_subscriber("student", "TR_b");
        assert_eq!(shard, a);
        assert_eq!(
            pipe,
            Some(Pipe {
                from: b,
                to: a,
                index: 0
            })
        );
        assert_eq!(placement.place_subscriber("student", "TR_b").1, None);
        placement.pipe_failed("TR_b", a);
        assert!(placement.place_subscriber("student", "TR_b").1.is_some());
        assert_eq!(placement.track_gone("TR_b"), vec![a]);
        assert_eq!(placement.home("TR_b"), None);
        assert!(placement.copy_dropped("TR_b", a));
        assert!(!placement.copy_dropped("TR_b", a), "once");
        assert!(!placement.copy_dropped("TR_b", b), "not a copy there");
    }

    #[test]
    fn leaving_frees_the_place() {
        let mut placement = Placement::new(3);
        let shard = placement.place("p");
        assert_eq!(placement.place("p"), shard, "placed once");
        assert_eq!(placement.load()[shard], 1);
        assert_eq!(placement.remove("p"), Some(shard));
        assert_eq!(placement.load()[shard], 0);
        assert_eq!(placement.remove("p"), None);
    }

    #[test]
    fn pipe_links_are_told_apart_from_node_links() {
        assert_eq!(pipe_target(pipe_link(3)), Some(3));
        assert_eq!(pipe_target(7), None);
    }
}
