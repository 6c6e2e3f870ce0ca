-- Routes the policy's autoApprovers approved (not an admin): they lose their
-- approval when the policy stops approving them.
ALTER TABLE routes ADD COLUMN approved_by_policy INTEGER NOT NULL DEFAULT 0
    CHECK (approved_by_policy IN (0, 1));
