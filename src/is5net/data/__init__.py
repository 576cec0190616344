"""Data: datasets in the DIS5K layout, transforms, the SAM-mask cache, and synthetic DIS-like data."""
