//! Accounts: registration, log-in, profile and roles.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use commands::Registration;
use domain::{UserId, account::AccountCommand, account::AccountOutcome, aggregate::Actor};
use secrecy::SecretString;

use super::{
    actor_of, caller, command_context, command_error, domain_role, parse_id, read_your_writes,
    services, types::User,
};
use crate::{
    auth::{PasswordHasher, Role, RoleGuard},
    error::ApiError,
    rate_limit::{RateLimitedAction, RateLimits},
};

/// Queries about the caller.
#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User, ApiError> {
        let user = caller(ctx)?;
        services(ctx)?
            .read_side
            .accounts()
            .by_id(UserId(user.user_id))
            .map(User::from)
            .ok_or_else(|| ApiError::NotFound("your account no longer exists".into()))
    }
}

/// What registering asks for.
#[derive(InputObject)]
pub struct RegisterInput {
    /// Email, unique over all accounts.
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// The name shown to others.
    pub display_name: String,
}

/// A signed-in session.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// Who signed in.
    pub user: User,
}

/// Profile changes; absent fields keep their value (the password changes with
/// `changePassword`).
#[derive(InputObject)]
pub struct UpdateProfileInput {
    /// A new display name.
    pub display_name: Option<String>,
}

/// Mutations of accounts.
#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Opens a customer account. Organizer and operator roles are granted by an admin.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<User, ApiError> {
        RateLimits::check_address(ctx, RateLimitedAction::Register)?;
        let services = services(ctx)?;
        let password_hash = services
            .passwords
            .hash(&SecretString::from(input.password))
            .await?;
        let request = command_context(ctx, Actor::Anonymous, None);
        let receipt = services
            .accounts
            .register(
                &request,
                Registration {
                    email: input.email,
                    display_name: input.display_name,
                    password_hash,
                    roles: Vec::new(),
                },
            )
            .await
            .map_err(command_error)?;
        let AccountOutcome::Registered { user_id, .. } = receipt.outcome else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "registration answered {:?}",
                receipt.outcome
            )));
        };
        read_your_writes(services, receipt.position).await?;
        account(services, user_id)
    }

    /// Signs in with email and password; returns a JWT.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<AuthPayload, ApiError> {
        RateLimits::check_login(ctx, &email)?;
        let services = services(ctx)?;
        let account = services.read_side.accounts().by_email(&email);
        let password = SecretString::from(password);
        let matches = services
            .passwords
            .verify(
                &password,
                account.as_ref().map(|a| a.password_hash.as_str()),
            )
            .await?;
        let Some(account) = account.filter(|_| matches) else {
            return Err(ApiError::domain(
                "UNAUTHENTICATED",
                "wrong email or password",
            ));
        };
        let roles: Vec<Role> = account.roles.iter().copied().map(super::api_role).collect();
        let issued =
            services
                .jwt
                .issue_in_session(account.user_id.as_uuid(), &roles, account.session)?;
        Ok(AuthPayload {
            token: issued.token,
            expires_at: issued.expires_at,
            user: account.into(),
        })
    }

    /// Changes the caller's display name.
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> Result<User, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let request = command_context(ctx, actor_of(user), None);
        let receipt = services
            .accounts
            .execute(
                &request,
                UserId(user.user_id),
                AccountCommand::UpdateProfile {
                    display_name: input.display_name,
                    password_hash: None,
                },
            )
            .await
            .map_err(command_error)?;
        read_your_writes(services, receipt.position).await?;
        account(services, UserId(user.user_id))
    }

    /// Changes the caller's password, given the current one. Every other session of the
    /// account ends (tokens issued before are refused from now on); the answer carries a
    /// fresh token for this one.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<AuthPayload, ApiError> {
        RateLimits::check_address(ctx, RateLimitedAction::Register)?;
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let new_password = SecretString::from(new_password);
        PasswordHasher::check_new(&new_password)?;
        let stored = services
            .read_side
            .accounts()
            .by_id(UserId(user.user_id))
            .ok_or_else(|| ApiError::NotFound("your account no longer exists".into()))?;
        let matches = services
            .passwords
            .verify(
                &SecretString::from(current_password),
                Some(&stored.password_hash),
            )
            .await?;
        if !matches {
            return Err(ApiError::domain(
                "UNAUTHENTICATED",
                "the current password is wrong",
            ));
        }
        let password_hash = services.passwords.hash(&new_password).await?;
        let request = command_context(ctx, actor_of(user), None);
        let receipt = services
            .accounts
            .execute(
                &request,
                UserId(user.user_id),
                AccountCommand::UpdateProfile {
                    display_name: None,
                    password_hash: Some(password_hash),
                },
            )
            .await
            .map_err(command_error)?;
        read_your_writes(services, receipt.position).await?;
        let account = services
            .read_side
            .accounts()
            .by_id(UserId(user.user_id))
            .ok_or_else(|| ApiError::NotFound("your account no longer exists".into()))?;
        let roles: Vec<Role> = account.roles.iter().copied().map(super::api_role).collect();
        let issued =
            services
                .jwt
                .issue_in_session(account.user_id.as_uuid(), &roles, account.session)?;
        Ok(AuthPayload {
            token: issued.token,
            expires_at: issued.expires_at,
            user: account.into(),
        })
    }

    /// Gives a user a role (admins only). It holds from the user's next request, with the
    /// token they already have.
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn grant_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> Result<User, ApiError> {
        change_role(
            ctx,
            &user_id,
            AccountCommand::GrantRole {
                role: domain_role(role),
            },
        )
        .await
    }

    /// Takes a role away from a user (admins only). It stops working at the user's next
    /// request, even with a token issued before.
    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> Result<User, ApiError> {
        if role == Role::Admin {
            let services = services(ctx)?;
            let target: UserId = parse_id("userId", &user_id)?;
            let accounts = services.read_side.accounts();
            let is_admin = accounts
                .roles(target)
                .is_some_and(|roles| roles.contains(&domain::Role::Admin));
            if is_admin && accounts.count_with_role(domain::Role::Admin) <= 1 {
                // Nobody could grant it again but `ticketing admin create` on a stopped
                // system.
                return Err(ApiError::domain(
                    "INVALID_STATE",
                    "this is the last administrator: grant ADMIN to someone else first",
                ));
            }
        }
        change_role(
            ctx,
            &user_id,
            AccountCommand::RevokeRole {
                role: domain_role(role),
            },
        )
        .await
    }
}

/// Grants or revokes a role as the calling administrator; answers the user as the read
/// side then sees them.
async fn change_role(
    ctx: &Context<'_>,
    user_id: &ID,
    change: AccountCommand,
) -> Result<User, ApiError> {
    let admin = caller(ctx)?;
    let services = services(ctx)?;
    let target: UserId = parse_id("userId", user_id)?;
    if services.read_side.accounts().by_id(target).is_none() {
        return Err(ApiError::NotFound(format!("no user {target}")));
    }
    let request = command_context(ctx, actor_of(admin), None);
    let receipt = services
        .accounts
        .execute(&request, target, change)
        .await
        .map_err(command_error)?;
    read_your_writes(services, receipt.position).await?;
    account(services, target)
}

fn account(services: &super::Services, user_id: UserId) -> Result<User, ApiError> {
    services
        .read_side
        .accounts()
        .by_id(user_id)
        .map(User::from)
        .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))
}
