"""Figures, tables and the HTML report read from result stores (`figures`, `tables`, `report`,
`report_beyond`, `thumbnails`)."""
