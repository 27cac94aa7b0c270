"""pyramid"""
