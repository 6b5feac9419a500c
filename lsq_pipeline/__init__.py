"""lsq_pipeline"""
