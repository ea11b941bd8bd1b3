"""Data sources, the patient-level split and the resize cache."""
