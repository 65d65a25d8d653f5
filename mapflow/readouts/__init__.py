"""Readouts layer: what a study measures at a layer or position: the logit lens (`lens`), attention maps
(`attention`), generation under a knockout (`generation`), effective pathways (`pathways`) and keyword lists
(`keywords`)."""
