//! Names of client messages and error codes as they appear on the wire (`publish_offer`,
//! `bad_sdp`), for logs and metric labels: never a message's payload (tokens and SDPs stay out
//! of logs).

use aula_protocol::{ClientMessage, ErrorCode};

/// The message's `type`, for logs (never the payload: tokens and SDPs stay out of logs).
pub(super) fn message_kind(msg: &ClientMessage) -> &'static str {
    match msg {
        ClientMessage::Join { .. } => "join",
        ClientMessage::Resume { .. } => "resume",
        ClientMessage::PublishOffer { .. } => "publish_offer",
        ClientMessage::SubscribeAnswer { .. } => "subscribe_answer",
        ClientMessage::Candidate { .. } => "candidate",
        ClientMessage::MuteTrack { .. } => "mute_track",
        ClientMessage::Ping => "ping",
        ClientMessage::Leave => "leave",
        ClientMessage::RaiseHand => "raise_hand",
        ClientMessage::LowerHand { .. } => "lower_hand",
        ClientMessage::InviteToStage { .. } => "invite_to_stage",
        ClientMessage::RemoveFromStage { .. } => "remove_from_stage",
        ClientMessage::MuteParticipantTrack { .. } => "mute_participant_track",
        ClientMessage::MuteAllStudents => "mute_all_students",
        ClientMessage::RemoveParticipant { .. } => "remove_participant",
        ClientMessage::LockRoom { .. } => "lock_room",
        ClientMessage::EndClass => "end_class",
        ClientMessage::SetPermissions { .. } => "set_permissions",
        ClientMessage::Chat { .. } => "chat",
        ClientMessage::Data { .. } => "data",
        ClientMessage::GoOnDuty { .. } => "go_on_duty",
        ClientMessage::GoOffDuty => "go_off_duty",
        ClientMessage::RequestHelp { .. } => "request_help",
        ClientMessage::CancelHelp => "cancel_help",
        ClientMessage::TransferSession { .. } => "transfer_session",
        ClientMessage::EndSupportSession { .. } => "end_support_session",
        ClientMessage::RateSupportSession { .. } => "rate_support_session",
        ClientMessage::TrackSettings { .. } => "track_settings",
        ClientMessage::StartRecording => "start_recording",
        ClientMessage::StopRecording => "stop_recording",
        ClientMessage::ClientStats(_) => "client_stats",
    }
}

/// The error code as it appears on the wire (`bad_sdp`), for metric labels.
pub(super) fn error_code_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::MessageTooLarge => "message_too_large",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotJoined => "not_joined",
        ErrorCode::AlreadyJoined => "already_joined",
        ErrorCode::BadSdp => "bad_sdp",
        ErrorCode::BadCandidate => "bad_candidate",
        ErrorCode::UnknownTrack => "unknown_track",
        ErrorCode::UnknownParticipant => "unknown_participant",
        ErrorCode::RoomLocked => "room_locked",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::PayloadTooLarge => "payload_too_large",
        ErrorCode::UnknownSession => "unknown_session",
        ErrorCode::Conflict => "conflict",
        ErrorCode::TrackMismatch => "track_mismatch",
        ErrorCode::UnsupportedCodec => "unsupported_codec",
        ErrorCode::AlreadyRecording => "already_recording",
        ErrorCode::NotRecording => "not_recording",
        ErrorCode::Internal => "internal",
        ErrorCode::Unavailable => "unavailable",
    }
}
