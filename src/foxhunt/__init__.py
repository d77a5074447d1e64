"""foxhunt: ThreatFox IOCs in, validated Sentinel / Defender XDR hunting packs out."""

__version__ = "0.1.0"
