//! Class moderation, chat, the support desk and recording: one call per protocol message.
//!
//! Each call only queues its message; the server's verdict comes back as events. What changed
//! for the room arrives as [`ClientEvent::Room`] (the hand queue, a permission change, a chat
//! line, ...), and a refusal as [`ClientEvent::Error`] with its code (`forbidden` for a
//! participant who may not moderate, `rate_limited` for chat sent too fast, ...). The server
//! checks every grant itself; these calls are conveniences, not the access control.
//!
//! [`ClientEvent::Room`]: crate::ClientEvent::Room
//! [`ClientEvent::Error`]: crate::ClientEvent::Error

use aula_protocol::{ClientMessage, ClientStats, Permissions};

use crate::{Client, ClientError};

impl Client {
    /// Raises our hand: we join the queue staff see in `hand_queue`.
    pub fn raise_hand(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::RaiseHand)
    }

    /// Lowers our own hand (`None`) or, for staff, someone else's.
    pub fn lower_hand(&self, participant_sid: Option<&str>) -> Result<(), ClientError> {
        self.send_message(ClientMessage::LowerHand {
            participant_sid: participant_sid.map(str::to_owned),
        })
    }

    /// Staff: lets a participant publish camera and microphone (it gets `permissions_changed`).
    pub fn invite_to_stage(&self, participant_sid: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::InviteToStage {
            participant_sid: participant_sid.to_owned(),
        })
    }

    /// Staff: revokes a participant's publishing; its tracks are unpublished at once.
    pub fn remove_from_stage(&self, participant_sid: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::RemoveFromStage {
            participant_sid: participant_sid.to_owned(),
        })
    }

    /// Staff: mutes another participant's track; only its publisher can unmute it.
    pub fn mute_track_of_other(&self, track_sid: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::MuteParticipantTrack {
            track_sid: track_sid.to_owned(),
        })
    }

    /// Staff: mutes every student's microphone.
    pub fn mute_all_students(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::MuteAllStudents)
    }

    /// Staff: removes a participant from the room, telling it `reason`.
    pub fn remove_participant(
        &self,
        participant_sid: &str,
        reason: Option<&str>,
    ) -> Result<(), ClientError> {
        self.send_message(ClientMessage::RemoveParticipant {
            participant_sid: participant_sid.to_owned(),
            reason: reason.map(str::to_owned),
        })
    }

    /// Staff: refuses (`true`) or again allows new joins of non-staff participants.
    pub fn lock_room(&self, locked: bool) -> Result<(), ClientError> {
        self.send_message(ClientMessage::LockRoom { locked })
    }

    /// Teacher: ends the class for everyone.
    pub fn end_class(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::EndClass)
    }

    /// Staff: replaces a participant's permissions (e.g. revokes an assistant's moderation).
    pub fn set_permissions(
        &self,
        participant_sid: &str,
        permissions: Permissions,
    ) -> Result<(), ClientError> {
        self.send_message(ClientMessage::SetPermissions {
            participant_sid: participant_sid.to_owned(),
            permissions,
        })
    }

    /// Sends a chat line to the room.
    pub fn chat(&self, text: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::Chat {
            text: text.to_owned(),
        })
    }

    /// Sends a small application message to the room under `topic`.
    pub fn send_data(&self, topic: &str, payload: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::Data {
            topic: topic.to_owned(),
            payload: payload.to_owned(),
        })
    }

    /// Agent: goes on duty (again, to update) with skills and a capacity.
    pub fn go_on_duty(&self, skills: &[&str], capacity: u32) -> Result<(), ClientError> {
        self.send_message(ClientMessage::GoOnDuty {
            skills: skills.iter().map(|s| (*s).to_owned()).collect(),
            capacity,
        })
    }

    /// Agent: takes no new learners; current sessions go on.
    pub fn go_off_duty(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::GoOffDuty)
    }

    /// Learner: asks for help on `topic`, preferably in `language`.
    pub fn request_help(&self, topic: &str, language: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::RequestHelp {
            topic: topic.to_owned(),
            language: language.to_owned(),
        })
    }

    /// Learner: withdraws a request still waiting.
    pub fn cancel_help(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::CancelHelp)
    }

    /// Agent: hands a session to an agent with `skill`.
    pub fn transfer_session(&self, session_id: &str, skill: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::TransferSession {
            session_id: session_id.to_owned(),
            skill: skill.to_owned(),
        })
    }

    /// Agent or learner: ends a support session.
    pub fn end_support_session(&self, session_id: &str) -> Result<(), ClientError> {
        self.send_message(ClientMessage::EndSupportSession {
            session_id: session_id.to_owned(),
        })
    }

    /// With the `can_record` grant (teachers and agents by default): starts recording the
    /// room; everyone gets a `recording` event.
    pub fn start_recording(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::StartRecording)
    }

    /// With the `can_record` grant: stops recording the room.
    pub fn stop_recording(&self) -> Result<(), ClientError> {
        self.send_message(ClientMessage::StopRecording)
    }

    /// Reports what this client measured of the media it receives, for the QoS timeline of a
    /// recording (the browser SDK sends one every 5 s by itself). The server answers
    /// `bad_message` to values out of range and `rate_limited` to more than one every 4 s.
    pub fn send_client_stats(&self, stats: ClientStats) -> Result<(), ClientError> {
        self.send_message(ClientMessage::ClientStats(stats))
    }
}
