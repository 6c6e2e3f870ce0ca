-- The groups an identity provider last said a user belongs to (a JSON list of
-- strings, refreshed at each OIDC login); policy groups of the same name include them.
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
