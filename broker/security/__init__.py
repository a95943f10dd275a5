"""Key material and the cryptography that keeps patient data unreadable at rest."""
