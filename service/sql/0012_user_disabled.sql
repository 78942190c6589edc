-- A user can be switched off without deleting anything: a disabled user's tokens and password are
-- refused at once (the checks read this flag where they read the user), the roles stay for the record.
ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;
