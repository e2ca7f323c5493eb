# The test node is distributed so tests can start and reach real peer nodes.
AWSCluster.Test.Cluster.start_test_node!()

ExUnit.start(capture_log: true)
