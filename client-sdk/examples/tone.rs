//! Joins a running Aula server, publishes the tone if the token allows it, and prints what
//! arrives once a second: a quick way to put a Rust participant next to browsers.
//!
//! ```sh
//! aula token --room demo --identity bot --role teacher   # or any way to mint a token
//! cargo run -p aula-client --example tone -- ws://127.0.0.1:7880/ws <token>
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aula_client::aula_protocol::ErrorCode;
use aula_client::{AudioSource, Client, ClientError, ClientEvent, ToneConfig};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: tone <ws-url> <token>");
        std::process::exit(2);
    };

    let mut client = Client::connect(&url, &token).await?;
    println!(
        "joined room {} as {} ({} others here)",
        client.room().name,
        client.participant().identity,
        client.room().participants.len()
    );
    // Kept alive until the end: dropping it stops the tone.
    let _audio = match client
        .publish_audio(AudioSource::Tone(ToneConfig::default()))
        .await
    {
        Ok(audio) => {
            println!(
                "publishing a {:.1} Hz tone",
                ToneConfig::default().frequency_hz
            );
            Some(audio)
        }
        Err(ClientError::Server {
            code: ErrorCode::Forbidden,
            ..
        }) => {
            println!("this token may not publish; listening only");
            None
        }
        Err(e) => return Err(e),
    };

    let mut per_track: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_report = Instant::now();
    loop {
        let event = tokio::select! {
            event = client.next_event() => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Some(ClientEvent::Packet(packet)) => {
                *per_track.entry(packet.track_sid.to_string()).or_default() += 1
            }
            Some(ClientEvent::Disconnected { reason }) => {
                println!("disconnected: {reason}");
                return Ok(());
            }
            Some(other) => println!("{other:?}"),
            None => return Ok(()),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            println!("packets per track: {per_track:?}");
            last_report = Instant::now();
        }
    }
    client.leave().await
}
