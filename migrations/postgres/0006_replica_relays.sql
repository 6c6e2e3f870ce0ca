-- Each replica's embedded DERP relay, as the region clients should use to reach
-- it (tailcfg's JSON form, written by the replica itself; NULL without one). Every
-- replica serves its own region and the other live replicas' regions, so two
-- clients on different replicas can relay to each other.

ALTER TABLE replicas ADD COLUMN relay_region TEXT;
