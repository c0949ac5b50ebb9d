"""femurseg review"""
