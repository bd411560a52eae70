"""The offline stage: image indexing, the JPEG ladder, quality estimation and the extraction job."""
