-- The credentials epoch: when the user's credentials last changed (a password set or cleared, a
-- disable or enable, the admin flag changed, "sign out everywhere"), bumped to now() by the
-- statement of that change. A token issued before it (its iat) and a console session created
-- before it are refused: the check reads this column where the user is read anyway
-- (core.accounts.active_user, core.roles SCOPE_SQL).
-- Until the first change it is the Unix epoch, for existing users (their tokens and sessions keep
-- working after the migration) and for new ones alike: creating a user changes no credentials, and
-- with now() a token without iat (taken as issued at its exp minus the longest lifetime accepted)
-- would be refused for a day after the user was created.
ALTER TABLE users ADD COLUMN credentials_changed_at timestamptz NOT NULL DEFAULT 'epoch';
