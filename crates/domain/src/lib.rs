//! The pure domain of Ticketing. Not built yet.
