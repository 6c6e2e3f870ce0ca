-- Routes the policy's autoApprovers approved (not an admin): they lose their
-- approval when the policy stops approving them.
ALTER TABLE routes ADD COLUMN approved_by_policy BOOLEAN NOT NULL DEFAULT FALSE;
