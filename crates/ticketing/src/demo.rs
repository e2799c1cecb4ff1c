//! `ticketing demo`: loads a realistic sample into a running server through its public
//! GraphQL API: two organizers, a seated concert and an unseated conference, a door
//! operator, and customers with a few orders. Running it again reuses the accounts and
//! adds another pair of events.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Load sample data into a running server.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's base URL.
    #[arg(long, env = "TICKETING_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An administrator's email (the one `serve` was started with).
    #[arg(long, env = "TICKETING_ADMIN_EMAIL")]
    admin_email: String,
    /// The administrator's password.
    #[arg(long, env = "TICKETING_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
}

/// The password of every sample account.
const SAMPLE_PASSWORD: &str = "demo-password";

/// Runs the load; the exit code says whether it succeeded.
pub async fn run(args: Args) -> ExitCode {
    match load(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

struct Client {
    http: reqwest::Client,
    endpoint: String,
}

impl Client {
    /// Sends a request; when the server's rate limit refuses it, waits as told and retries.
    async fn call(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        loop {
            let body = self.send(token, query, &variables).await?;
            let error = &body["errors"][0];
            if error["extensions"]["code"] == "RATE_LIMITED" {
                let wait = error["extensions"]["retryAfterSeconds"]
                    .as_u64()
                    .unwrap_or(1);
                eprintln!("rate limited by the server; retrying in {wait} s");
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            if !error.is_null() {
                bail!(
                    "{}: {}",
                    error["extensions"]["code"].as_str().unwrap_or("ERROR"),
                    error["message"].as_str().unwrap_or("")
                );
            }
            return Ok(body["data"].clone());
        }
    }

    async fn send(
        &self,
        token: Option<&str>,
        query: &str,
        variables: &Value,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach {}; is `ticketing serve` running?",
                    self.endpoint
                )
            })?
            .json()
            .await
            .context("the server answered something other than JSON")
    }

    async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let data = self
            .call(
                None,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                json!({ "e": email, "p": password }),
            )
            .await
            .with_context(|| format!("logging in as {email}"))?;
        Ok(data["login"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Gives `user` a role, unless they already have it.
    async fn grant(&self, admin: &str, user: &str, role: &str) -> anyhow::Result<()> {
        let granted = self
            .call(
                Some(admin),
                "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { id } }",
                json!({ "u": user, "r": role }),
            )
            .await;
        match granted {
            Err(e) if !e.to_string().starts_with("INVALID_STATE") => Err(e),
            _ => Ok(()),
        }
    }

    /// Registers `email` unless it exists; returns (user id, token).
    async fn account(&self, email: &str, name: &str) -> anyhow::Result<(String, String)> {
        let registered = self
            .call(
                None,
                "mutation($i: RegisterInput!) { register(input: $i) { id } }",
                json!({ "i": { "email": email, "password": SAMPLE_PASSWORD, "displayName": name } }),
            )
            .await;
        if let Err(e) = &registered
            && !e.to_string().starts_with("EMAIL_TAKEN")
        {
            bail!("registering {email}: {e}");
        }
        let token = self.login(email, SAMPLE_PASSWORD).await?;
        let me = self.call(Some(&token), "{ me { id } }", json!({})).await?;
        Ok((
            me["me"]["id"].as_str().unwrap_or_default().to_owned(),
            token,
        ))
    }
}

async fn load(args: &Args) -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::new(),
        endpoint: format!("{}/graphql", args.url.trim_end_matches('/')),
    };
    let admin = client
        .login(&args.admin_email, &args.admin_password)
        .await?;

    let mut organizers = Vec::new();
    for (email, name) in [
        ("lena@harbour-hall.example", "Lena Park (Harbour Hall)"),
        ("omar@rustconf.example", "Omar Diallo (RustConf)"),
    ] {
        let (id, _) = client.account(email, name).await?;
        client.grant(&admin, &id, "ORGANIZER").await?;
        organizers.push(client.login(email, SAMPLE_PASSWORD).await?);
    }
    let (door_id, _) = client
        .account("sam@harbour-hall.example", "Sam (door)")
        .await?;
    client.grant(&admin, &door_id, "OPERATOR").await?;

    let create = "mutation($i: CreateEventInput!) { createEvent(input: $i) { id name tiers { id name seated } } }";
    let publish = "mutation($e: ID!) { publishEvent(eventId: $e) { id } }";
    let seats = |row: char, from: u32, to: u32| -> Vec<String> {
        (from..=to).map(|n| format!("{row}-{n}")).collect()
    };
    let stalls: Vec<String> = ['A', 'B', 'C']
        .iter()
        .flat_map(|r| seats(*r, 1, 12))
        .collect();
    let balcony: Vec<String> = ['D', 'E'].iter().flat_map(|r| seats(*r, 1, 10)).collect();
    let concert = client
        .call(
            Some(&organizers[0]),
            create,
            json!({ "i": {
                "name": "Harbour Hall Chamber Orchestra: Spring Gala",
                "description": "Mozart and Dvořák by candlelight.",
                "venue": "Harbour Hall, Main Auditorium",
                "startsAt": "2030-04-18T19:30:00Z", "endsAt": "2030-04-18T22:00:00Z",
                "perUserLimit": 6,
                "tiers": [
                    { "name": "Stalls", "priceMinor": 6500, "currency": "EUR", "seats": stalls },
                    { "name": "Balcony", "priceMinor": 3900, "currency": "EUR", "seats": balcony }
                ]
            } }),
        )
        .await?;
    let concert = &concert["createEvent"];
    let concert_id = concert["id"].as_str().unwrap_or_default().to_owned();
    client
        .call(Some(&organizers[0]), publish, json!({ "e": concert_id }))
        .await?;
    client
        .call(
            Some(&organizers[0]),
            "mutation($e: ID!, $u: ID!) { assignDoorStaff(eventId: $e, userId: $u) { id } }",
            json!({ "e": concert_id, "u": door_id }),
        )
        .await
        .context("assigning the door operator to the concert")?;

    let conference = client
        .call(
            Some(&organizers[1]),
            create,
            json!({ "i": {
                "name": "RustConf Europe 2030",
                "description": "Two days of talks and workshops.",
                "venue": "Congress Centre, Lisbon",
                "startsAt": "2030-09-10T08:00:00Z", "endsAt": "2030-09-11T18:00:00Z",
                "perUserLimit": 4,
                "tiers": [
                    { "name": "Standard", "priceMinor": 24900, "currency": "EUR", "capacity": 800 },
                    { "name": "VIP", "priceMinor": 59900, "currency": "EUR", "capacity": 60 },
                    { "name": "VVIP", "priceMinor": 129900, "currency": "EUR", "capacity": 10 }
                ]
            } }),
        )
        .await?;
    let conference = &conference["createEvent"];
    let conference_id = conference["id"].as_str().unwrap_or_default().to_owned();
    client
        .call(Some(&organizers[1]), publish, json!({ "e": conference_id }))
        .await?;

    let purchase =
        "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status } }";
    let stalls_tier = concert["tiers"][0]["id"].clone();
    let standard = conference["tiers"][0]["id"].clone();
    let vip = conference["tiers"][1]["id"].clone();
    let customers = [
        ("ana@example.com", "Ana Souza"),
        ("ben@example.com", "Ben Okafor"),
        ("chloe@example.com", "Chloé Martin"),
        ("dev@example.com", "Dev Patel"),
        ("eli@example.com", "Eli Cohen"),
    ];
    let run = uuid::Uuid::new_v4();
    let mut orders = 0;
    for (index, (email, name)) in customers.iter().enumerate() {
        let (_, token) = client.account(email, name).await?;
        let row = ['A', 'B', 'C'][index % 3];
        let seat = format!("{row}-{}", index + 1);
        client
            .call(
                Some(&token),
                purchase,
                json!({ "i": { "eventId": concert_id, "tierId": stalls_tier, "seats": [seat],
                    "paymentToken": "tok_success", "idempotencyKey": format!("demo-{run}-{index}-concert") } }),
            )
            .await
            .with_context(|| format!("{email} buying seat {seat}"))?;
        let tier = if index == 0 { &vip } else { &standard };
        client
            .call(
                Some(&token),
                purchase,
                json!({ "i": { "eventId": conference_id, "tierId": tier, "quantity": 1 + index % 2,
                    "paymentToken": "tok_success", "idempotencyKey": format!("demo-{run}-{index}-conf") } }),
            )
            .await
            .with_context(|| format!("{email} buying conference tickets"))?;
        orders += 2;
    }

    println!("Sample loaded into {}:", args.url);
    println!("  seated event   {concert_id}  (Harbour Hall, 56 seats in 2 tiers)");
    println!("  unseated event {conference_id}  (RustConf Europe, 3 tiers)");
    println!("  organizers     lena@harbour-hall.example, omar@rustconf.example");
    println!("  door operator  sam@harbour-hall.example (door staff of the concert)");
    println!(
        "  customers      {} ({orders} paid orders)",
        customers.map(|c| c.0).join(", ")
    );
    println!("  password of every sample account: {SAMPLE_PASSWORD}");
    Ok(())
}
