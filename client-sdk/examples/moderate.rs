//! A teacher's assistant bot: joins a class, invites every student who raises a hand to the
//! stage, and answers "hello" in the chat.
//!
//! ```sh
//! aula serve &   # dev mode
//! cargo run -p aula-client --example moderate -- ws://127.0.0.1:7880/ws "$(aula token --room demo --identity bot --role assistant)"
//! ```

use aula_client::aula_protocol::ServerEvent;
use aula_client::{Client, ClientEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: moderate WS_URL TOKEN");
        std::process::exit(2);
    };
    let mut client = Client::connect(&url, &token).await?;
    println!(
        "joined {} as {}",
        client.room().name,
        client.participant().identity
    );
    while let Some(event) = client.next_event().await {
        match event {
            ClientEvent::Room(ServerEvent::HandQueue { participant_sids }) => {
                for sid in participant_sids {
                    println!("inviting {sid} to the stage");
                    client.invite_to_stage(&sid)?;
                }
            }
            ClientEvent::Room(ServerEvent::Chat { name, text, .. }) if text.contains("hello") => {
                client.chat(&format!("hello, {name}"))?;
            }
            ClientEvent::Error { code, message } => eprintln!("refused: {code:?} {message}"),
            ClientEvent::Disconnected { reason } => {
                println!("session ended: {reason}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
