//! What a joined participant's messages do: publishing and subscribing, moderation, chat,
//! data, stats, the support desk and recording requests (the rest of the session's state
//! machine, joining, resuming and leaving, is in the parent module).

use super::*;

impl Session {
    pub(super) async fn handle_joined(&mut self, sid: &str, msg: ClientMessage) -> Flow {
        match msg {
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } => {
                self.error(ErrorCode::AlreadyJoined, "this session already joined");
            }
            ClientMessage::PublishOffer { sdp, tracks } => {
                // Live permissions, not the token's: a student invited on stage publishes, one
                // removed from it no longer does.
                let permissions = self.state.permissions(sid).unwrap_or_default();
                if !permissions.can_publish || permissions.hidden {
                    self.error(
                        ErrorCode::Forbidden,
                        if permissions.hidden {
                            "hidden participants do not publish"
                        } else {
                            "you may not publish (yet): your token or a moderator does not allow it"
                        },
                    );
                    return Flow::Continue;
                }
                if let Some(t) = tracks.iter().find(|t| !permissions.allows(t.source)) {
                    self.error(
                        ErrorCode::Forbidden,
                        format!("you may not publish a {:?} track", t.source),
                    );
                    return Flow::Continue;
                }
                match self.state.media().publish_offer(sid, sdp, tracks).await {
                    Ok(sdp) => self.send(ServerMessage::PublishAnswer { sdp }),
                    Err(e) => self.sfu_error(sid, "publish offer", e, ErrorCode::BadSdp),
                }
            }
            ClientMessage::SubscribeAnswer { sdp } => {
                if let Err(e) = self.state.media().subscribe_answer(sid, sdp).await {
                    self.sfu_error(sid, "subscribe answer", e, ErrorCode::BadSdp);
                }
            }
            ClientMessage::Candidate { target, candidate } => {
                if let Err(e) = self
                    .state
                    .media()
                    .add_candidate(sid, target, candidate)
                    .await
                {
                    self.sfu_error(sid, "candidate", e, ErrorCode::BadCandidate);
                }
            }
            ClientMessage::MuteTrack { track_sid, muted } => {
                if !self.state.mute(sid, &track_sid, muted) {
                    self.error(
                        ErrorCode::UnknownTrack,
                        format!("{track_sid} is not one of your tracks"),
                    );
                    return Flow::Continue;
                }
                let fields = serde_json::json!({ "track": track_sid, "muted": u8::from(muted) });
                self.state.recorder().qos().event(sid, "mute", fields);
                if let Err(e) = self.state.media().note_self_muted(&track_sid, muted).await {
                    tracing::debug!(sid, track_sid, "the SFU did not note a mute: {e}");
                }
                if !muted && self.state.registry().take_force_muted(sid, &track_sid) {
                    // A moderator had paused it in the SFU; the publisher's unmute resumes it.
                    self.state
                        .apply_effects(vec![MediaEffect::Pause {
                            track_sid,
                            paused: false,
                        }])
                        .await;
                }
            }
            ClientMessage::Ping => self.send(ServerMessage::Pong),
            ClientMessage::Leave => {
                self.end(Some("left"));
                return Flow::Ending;
            }
            ClientMessage::TrackSettings {
                track_sid,
                width,
                height,
            } => self.track_settings(sid, &track_sid, width, height).await,
            ClientMessage::Chat { text } => self.chat(sid, &text),
            ClientMessage::Data { topic, payload } => self.data(sid, &topic, &payload),
            msg @ (ClientMessage::GoOnDuty { .. }
            | ClientMessage::GoOffDuty
            | ClientMessage::RequestHelp { .. }
            | ClientMessage::CancelHelp
            | ClientMessage::TransferSession { .. }
            | ClientMessage::EndSupportSession { .. }) => self.support(sid, msg),
            ClientMessage::RateSupportSession { session_id, good } => {
                self.rate_support(sid, &session_id, good)
            }
            ClientMessage::StartRecording => self.record(true).await,
            ClientMessage::StopRecording => self.record(false).await,
            ClientMessage::ClientStats(stats) => self.client_stats(sid, &stats),
            msg => {
                let result = self.moderate(sid, msg).await;
                if let Err((code, message)) = result {
                    self.error(code, message);
                }
            }
        }
        Flow::Continue
    }

    /// Starts or stops recording the room, for a participant whose token may.
    async fn record(&mut self, start: bool) {
        let Some(joined) = &self.joined else { return };
        let room = joined.claims.room.clone();
        if !joined.claims.may_record() {
            self.error(ErrorCode::Forbidden, "your token may not record this room");
            return;
        }
        let recorder = self.state.recorder();
        let result = if start {
            recorder.start(&room, &joined.claims.sub).await.map(|_| ())
        } else {
            recorder.stop(&room).await.map(|_| ())
        };
        if let Err(refusal) = result {
            self.error(refusal.error_code(), refusal.message(&room));
        }
    }

    /// The moderation messages: the registry checks and changes, then the media plane follows.
    async fn moderate(&mut self, sid: &str, msg: ClientMessage) -> Result<(), Refused> {
        let action = message_kind(&msg);
        let target = match &msg {
            ClientMessage::LowerHand { participant_sid } => participant_sid.clone(),
            ClientMessage::InviteToStage { participant_sid }
            | ClientMessage::RemoveFromStage { participant_sid }
            | ClientMessage::SetPermissions {
                participant_sid, ..
            }
            | ClientMessage::RemoveParticipant {
                participant_sid, ..
            } => Some(participant_sid.clone()),
            ClientMessage::MuteParticipantTrack { track_sid } => Some(track_sid.clone()),
            _ => None,
        };
        let effects = {
            let mut reg = self.state.registry();
            match msg {
                ClientMessage::RaiseHand => reg.raise_hand(sid).map(|()| Vec::new())?,
                ClientMessage::LowerHand { participant_sid } => reg
                    .lower_hand(sid, participant_sid.as_deref())
                    .map(|()| Vec::new())?,
                ClientMessage::InviteToStage { participant_sid } => reg
                    .invite_to_stage(sid, &participant_sid)
                    .map(|()| Vec::new())?,
                ClientMessage::RemoveFromStage { participant_sid } => {
                    reg.remove_from_stage(sid, &participant_sid)?
                }
                ClientMessage::MuteParticipantTrack { track_sid } => {
                    reg.mute_participant_track(sid, &track_sid)?
                }
                ClientMessage::MuteAllStudents => reg.mute_all_students(sid)?,
                ClientMessage::SetPermissions {
                    participant_sid,
                    permissions,
                } => reg.set_permissions(sid, &participant_sid, permissions)?,
                ClientMessage::RemoveParticipant {
                    participant_sid,
                    reason,
                } => {
                    let emptied =
                        reg.remove_participant(sid, &participant_sid, reason.as_deref())?;
                    drop(reg);
                    self.state.reap_later(emptied);
                    tracing::info!(sid, participant_sid, "removed by moderator");
                    Vec::new()
                }
                ClientMessage::LockRoom { locked } => {
                    reg.lock_room(sid, locked).map(|()| Vec::new())?
                }
                ClientMessage::EndClass => {
                    let ended = reg.end_class(sid)?;
                    tracing::info!(sid, participants = ended.len(), "class ended");
                    Vec::new()
                }
                other => {
                    // Every other message is handled by `handle_joined`.
                    tracing::error!("unrouted message {}", message_kind(&other));
                    return Err((ErrorCode::Internal, "unrouted message".into()));
                }
            }
        };
        self.state.apply_effects(effects).await;
        let fields = serde_json::json!({ "action": action, "target": target });
        self.state.recorder().qos().event(sid, "moderation", fields);
        Ok(())
    }

    /// A subscriber's rendered size of one video track, passed to the SFU as it comes: the
    /// client already sends it only on change, and the SFU keeps just the latest per track.
    async fn track_settings(&mut self, sid: &str, track_sid: &str, width: u32, height: u32) {
        if width > MAX_RENDERED_DIMENSION || height > MAX_RENDERED_DIMENSION {
            self.error(
                ErrorCode::BadMessage,
                format!("width and height must be at most {MAX_RENDERED_DIMENSION} pixels"),
            );
            return;
        }
        // The registry guard is a temporary: released before the SFU is awaited.
        let receives = receives_video(&self.state.registry(), sid, track_sid);
        if let Err((code, message)) = receives {
            self.error(code, message);
            return;
        }
        let size = RenderedSize { width, height };
        if let Err(e) = self
            .state
            .media()
            .set_rendered_size(sid, track_sid, size)
            .await
        {
            self.sfu_error(sid, "track settings", e, ErrorCode::UnknownTrack);
        }
    }

    fn chat(&mut self, sid: &str, text: &str) {
        if text.trim().is_empty() || text.len() > MAX_CHAT_BYTES {
            self.error(
                ErrorCode::PayloadTooLarge,
                format!("chat text must be 1 to {MAX_CHAT_BYTES} bytes"),
            );
            return;
        }
        if !self.may_send(sid, |j| &mut j.chat_bucket, "chat") {
            return;
        }
        if let Err((code, message)) = self.state.registry().chat(sid, text) {
            self.error(code, message);
            return;
        }
        let fields = serde_json::json!({ "text": text });
        self.state.recorder().qos().event(sid, "chat", fields);
    }

    /// A browser's own figures, for the QoS timeline of a recording (ignored otherwise).
    fn client_stats(&mut self, sid: &str, stats: &ClientStats) {
        if let Err(why) = stats.validate() {
            self.error(ErrorCode::BadMessage, why);
            return;
        }
        let now = std::time::Instant::now();
        if let Some(wait) = self
            .joined
            .as_mut()
            .and_then(|j| j.stats_bucket.take(now).err())
        {
            self.error(
                ErrorCode::RateLimited,
                format!("too many client_stats; retry in {} ms", wait.as_millis()),
            );
            return;
        }
        self.state.recorder().qos().client_stats(sid, stats);
    }

    /// The checks chat and data messages share: the sender's data grant, then its rate limit
    /// (`bucket` picks which). Replies with the error and returns false when either refuses.
    fn may_send(
        &mut self,
        sid: &str,
        bucket: fn(&mut Joined) -> &mut TokenBucket,
        what: &str,
    ) -> bool {
        if let Err((code, message)) = self.state.registry().data_allowed(sid) {
            self.error(code, message);
            return false;
        }
        if let Some(wait) = self
            .joined
            .as_mut()
            .and_then(|j| bucket(j).take(std::time::Instant::now()).err())
        {
            self.error(
                ErrorCode::RateLimited,
                format!("too many {what} messages; retry in {} ms", wait.as_millis()),
            );
            return false;
        }
        true
    }

    fn data(&mut self, sid: &str, topic: &str, payload: &str) {
        if payload.len() > MAX_DATA_BYTES || topic.len() > MAX_TOPIC_BYTES {
            self.error(
                ErrorCode::PayloadTooLarge,
                format!(
                    "data payload at most {MAX_DATA_BYTES} bytes, topic at most {MAX_TOPIC_BYTES}"
                ),
            );
            return;
        }
        if !self.may_send(sid, |j| &mut j.data_bucket, "data") {
            return;
        }
        if let Err((code, message)) = self.state.registry().data(sid, topic, payload) {
            self.error(code, message);
        }
    }

    /// The support desk messages; the desk checks the role (agents go on duty, learners ask).
    fn support(&mut self, sid: &str, msg: ClientMessage) {
        let Some(joined) = &self.joined else { return };
        let claims = &joined.claims;
        let caller_identity = claims.sub.clone();
        let caller = Caller {
            sid: sid.to_owned(),
            identity: claims.sub.clone(),
            name: if claims.name.is_empty() {
                claims.sub.clone()
            } else {
                claims.name.clone()
            },
            role: claims.role,
            outbox: self.outbox.clone(),
        };
        let now = std::time::Instant::now();
        let transfer = match &msg {
            ClientMessage::TransferSession { session_id, skill } => {
                Some((format!("support-{session_id}"), skill.clone()))
            }
            _ => None,
        };
        let result = {
            let mut desk = self.state.desk();
            match msg {
                ClientMessage::GoOnDuty { skills, capacity } => {
                    desk.go_on_duty(caller, &skills, capacity, now)
                }
                ClientMessage::GoOffDuty => desk.go_off_duty(sid, now),
                ClientMessage::RequestHelp { topic, language } => {
                    desk.request_help(caller, &topic, &language, now)
                }
                ClientMessage::CancelHelp => desk.cancel_help(sid, now),
                ClientMessage::TransferSession { session_id, skill } => {
                    desk.transfer(sid, &session_id, &skill, now)
                }
                ClientMessage::EndSupportSession { session_id } => desk.end(sid, &session_id, now),
                _ => return,
            }
        };
        match result {
            Ok(effects) => {
                if let Some((room, skill)) = transfer {
                    let fields = serde_json::json!({ "skill": skill, "by": caller_identity });
                    let qos = self.state.recorder().qos();
                    qos.room_event(&room, None, "transfer", fields);
                }
                self.state.desk_effects(effects)
            }
            Err((code, message)) => self.error(code, message),
        }
    }

    /// A learner's rating of its ended support session, counted once on `/metrics`.
    fn rate_support(&self, sid: &str, session_id: &str, good: bool) {
        let rated = self.state.desk().rate(sid, session_id);
        match rated {
            Ok(()) => self
                .state
                .metrics()
                .support_ratings
                .with_label_values(&[if good { "good" } else { "bad" }])
                .inc(),
            Err((code, message)) => self.error(code, message),
        }
    }

    /// Reports a media-plane failure. Errors the client caused become `client_code` (bad SDP or
    /// candidate) and the session continues; the media plane's own failures are `internal`.
    fn sfu_error(&self, sid: &str, what: &str, e: SfuError, client_code: ErrorCode) {
        let code = match &e {
            SfuError::BadSdp(_) => ErrorCode::BadSdp,
            SfuError::BadCandidate(_) => ErrorCode::BadCandidate,
            SfuError::TrackMismatch(_) => ErrorCode::TrackMismatch,
            SfuError::UnsupportedCodec(_) => ErrorCode::UnsupportedCodec,
            SfuError::UnknownTrack(_) => ErrorCode::UnknownTrack,
            SfuError::NoConnection(_) | SfuError::UnknownParticipant => client_code,
            SfuError::Internal(_) | SfuError::Stopped => {
                tracing::warn!(sid, "{what}: {e}");
                ErrorCode::Internal
            }
        };
        self.error(code, e.to_string());
    }
}

/// Whether `sid` receives `track_sid` as video, as far as the room knows: another member's
/// video track, and `sid` may subscribe. The SFU then checks that the subscription exists.
fn receives_video(registry: &Registry, sid: &str, track_sid: &str) -> Result<(), Refused> {
    let unknown = |why: &str| (ErrorCode::UnknownTrack, format!("{track_sid}: {why}"));
    let room = registry
        .room_of(sid)
        .ok_or_else(|| unknown("you are in no room"))?;
    let (owner, track) = room
        .members
        .iter()
        .find_map(|m| {
            m.info
                .tracks
                .iter()
                .find(|t| t.sid == track_sid)
                .map(|t| (m, t))
        })
        .ok_or_else(|| unknown("no such track in your room"))?;
    if owner.info.sid == sid {
        return Err(unknown("your own track; you do not receive it"));
    }
    if !room
        .member(sid)
        .is_some_and(|m| m.permissions.can_subscribe)
    {
        return Err(unknown("you may not subscribe to tracks"));
    }
    if track.kind != TrackKind::Video {
        return Err(unknown("not a video track"));
    }
    Ok(())
}
